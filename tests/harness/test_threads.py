"""The harness sizes the model libraries' thread pools by the CPUs a container may use: the
cores it may run on, capped by its CPU quota, which the libraries themselves ignore."""

import os
from pathlib import Path

import pytest

from runners.harness.threads import cpu_quota, export_thread_defaults, usable_cpus

CORES = len(os.sched_getaffinity(0))


def cgroup_v2(root: Path, cpu_max: str) -> Path:
    root.mkdir(exist_ok=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def cgroup_v1(root: Path, quota_us: int, period_us: int = 100_000) -> Path:
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
    (root / "cpu" / "cpu.cfs_period_us").write_text(f"{period_us}\n")
    return root


@pytest.mark.parametrize(("cpu_max", "quota"), [("150000 100000", 1.5), ("50000 100000", 0.5), ("max 100000", None)])
def test_cgroup_v2_quota_is_read_from_cpu_max(tmp_path, cpu_max, quota):
    assert cpu_quota(cgroup_v2(tmp_path, cpu_max)) == quota


@pytest.mark.parametrize(("quota_us", "quota"), [(200_000, 2.0), (25_000, 0.25), (-1, None)])
def test_cgroup_v1_quota_is_read_from_the_cfs_files(tmp_path, quota_us, quota):
    assert cpu_quota(cgroup_v1(tmp_path, quota_us)) == quota


def test_no_cgroup_files_or_unreadable_ones_mean_no_quota(tmp_path):
    assert cpu_quota(tmp_path) is None
    assert cpu_quota(cgroup_v2(tmp_path / "garbage", "garbage")) is None
    assert cpu_quota(cgroup_v2(tmp_path / "no-period", "100000 0")) is None


def test_a_quota_caps_the_cores_rounded_up_and_never_below_one(tmp_path):
    assert usable_cpus(cgroup_v2(tmp_path / "half", "50000 100000")) == 1
    assert usable_cpus(cgroup_v2(tmp_path / "one-and-a-half", "150000 100000")) == min(2, CORES)
    assert usable_cpus(cgroup_v2(tmp_path / "plenty", f"{(CORES + 8) * 100000} 100000")) == CORES
    assert usable_cpus(tmp_path / "none") == CORES


def test_the_thread_counts_are_exported_unless_already_set(tmp_path):
    root = cgroup_v2(tmp_path, "100000 100000")
    environ = {"MKL_NUM_THREADS": "3"}

    assert export_thread_defaults(environ, root) == "1"
    assert environ == {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "3",
                       "OPENBLAS_NUM_THREADS": "1"}
    assert export_thread_defaults({"OMP_NUM_THREADS": "4"}, root) == "4"
