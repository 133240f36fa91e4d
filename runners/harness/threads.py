"""How many threads a model's CPU libraries start and how they wait between batches, set
before the handler loads them."""

import math
import os
from collections.abc import MutableMapping
from pathlib import Path

# Serving leaves the model idle between batches (answers going out, the batching wait), and
# OpenMP's threads spin through such gaps by default: CPU a container's quota counts, and on a
# busy node the spinners wait at each barrier for a peer that lost its CPU. MiniLM on a shared
# 2-CPU machine encoded 3 to 4 times more sentences per CPU-second with passive waiting, bare
# and behind the harness alike (bench/serve.py). A runner or operator that sets it wins.
THREAD_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
# What OpenMP (torch), MKL and OpenBLAS (numpy) read for the size of their pools.
THREAD_COUNT_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def export_thread_defaults(environ: MutableMapping[str, str] = os.environ, cgroup_root: Path = CGROUP_ROOT) -> str:
    """Before torch or any other OpenMP library is imported: they read these once, when loaded.
    Returns the size their pools get (`OMP_NUM_THREADS`)."""
    for name, value in THREAD_DEFAULTS.items():
        environ.setdefault(name, value)
    # The libraries size their pools by the cores they may run on and ignore the container's
    # CPU quota: a `cpu: 2` container on a 64-core node would start 64 threads on a budget of
    # two, and the kernel stops them all for the rest of each 100 ms period once the budget
    # is spent: every batch then waits out the throttle.
    count = usable_cpus(cgroup_root)
    for name in THREAD_COUNT_VARIABLES:
        environ.setdefault(name, str(count))
    return environ["OMP_NUM_THREADS"]


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The cores this process may run on, capped by its cgroup's CPU quota (rounded up)."""
    cpus = len(os.sched_getaffinity(0))
    quota = cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return cpus


def cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time a period that this cgroup may use (`docker run --cpus`, a
    Kubernetes CPU limit), or None when unlimited or unknown. Inside a container its own
    cgroup is the one mounted at the root: cgroup v2's `cpu.max`, v1's CFS files."""
    try:
        quota, period = (cgroup_root / "cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError, ZeroDivisionError):
        pass
    try:
        quota_us = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
