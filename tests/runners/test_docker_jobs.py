"""Jobs on the real Docker Engine: hardened like services, the input mounted read-only, the
outputs taken out of the stopped container's folder by digest, links and huge files refused."""

import hashlib
import io
import tarfile
import time
import uuid

import pytest

from runners.base import JobInputFile, JobOutputSpec, JobSpec, OutputRefused, RunPhase
from runners.docker import job_container_options
from tests.jobs.conftest import JOB_SCRIPT

from .test_docker_runner import BASE_IMAGE, client, runner  # noqa: F401  (shared engine fixtures)

DATASET = b"text,label\nsunny,weather\n"
OUTPUTS = (JobOutputSpec(name="weights", path="model/weights.bin"), JobOutputSpec(name="metrics", path="metrics.json"))


@pytest.fixture(scope="module")
def job_image(client):  # noqa: F811
    tag = f"aihub-runner-test/job:{uuid.uuid4().hex[:12]}"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in (("Dockerfile", f"FROM {BASE_IMAGE}\nCOPY job.py /app/job.py\nWORKDIR /app\n"), ("job.py", JOB_SCRIPT)):
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    buffer.seek(0)
    client.images.build(fileobj=buffer, custom_context=True, tag=tag, network_mode="none", rm=True, forcerm=True)
    yield tag
    client.images.remove(tag, force=True)


def spec(image: str, dataset, *, mode: str = "ok") -> JobSpec:
    return JobSpec(job=f"j-{uuid.uuid4().hex[:10]}", image=image, command=("python3", "job.py"),
                   environment={"INPUT_MODE": mode}, input_files=(JobInputFile(name="dataset", source=str(dataset)),),
                   outputs=OUTPUTS)


def run_to_the_end(runner, job: JobSpec, timeout: float = 60):  # noqa: F811
    runner.launch_job(job)
    deadline = time.monotonic() + timeout
    while (state := runner.status(job.job)).alive:
        assert time.monotonic() < deadline, runner.logs(job.job)
        time.sleep(0.2)
    return state


def test_the_job_container_is_hardened_and_its_inputs_are_read_only(tmp_path):
    options = job_container_options(spec("img", tmp_path / "d.csv"), address="127.0.0.1", hub_id="hub")
    assert options["user"] == "65532:65532" and options["cap_drop"] == ["ALL"] and options["read_only"] is True
    assert options["ports"] == {} and options["entrypoint"] == ["python3", "job.py"]
    name = options["name"]
    assert options["volumes"] == {f"{name}-inputs": {"bind": "/inputs", "mode": "ro"},
                                  f"{name}-output": {"bind": "/output", "mode": "rw"}}
    assert options["environment"]["INPUT_DATASET"] == "/inputs/dataset" and options["environment"]["OUTPUT_DIR"] == "/output"


def test_a_job_runs_to_completion_and_its_outputs_come_out_by_digest(runner, job_image, tmp_path, client):  # noqa: F811
    dataset = tmp_path / "d.csv"
    dataset.write_bytes(DATASET)
    job = spec(job_image, dataset)
    state = run_to_the_end(runner, job)
    assert state.phase == RunPhase.EXITED and state.exit_code == 0, runner.logs(job.job)
    assert "the input is read-only" in runner.logs(job.job)
    collected = {output.name: output for output in
                 runner.collect_outputs(job.job, OUTPUTS, into=str(tmp_path / "out"), max_bytes=1_000_000)}
    weights = DATASET.decode().upper().encode()
    assert collected["weights"].sha256 == hashlib.sha256(weights).hexdigest() and collected["weights"].size == len(weights)
    assert open(collected["weights"].file, "rb").read() == weights
    runner.remove_job(job.job)
    assert runner.status(job.job).phase == RunPhase.MISSING
    assert not client.volumes.list(filters={"name": f"aihub-{job.job}"})


@pytest.mark.parametrize(("mode", "why"), [
    ("symlink", "is a symbolic link"),
    ("linked-folder", "is under a symbolic link"),
    ("huge", "larger than the limit"),
])
def test_links_and_huge_outputs_are_refused(runner, job_image, tmp_path, mode, why):  # noqa: F811
    dataset = tmp_path / "d.csv"
    dataset.write_bytes(DATASET)
    job = spec(job_image, dataset, mode=mode)
    assert run_to_the_end(runner, job).exit_code == 0, runner.logs(job.job)
    with pytest.raises(OutputRefused, match=why):
        runner.collect_outputs(job.job, OUTPUTS, into=str(tmp_path / "out"), max_bytes=1_000_000)
    runner.remove_job(job.job)


def test_an_output_path_that_leaves_the_folder_is_refused_before_anything_is_read(runner, tmp_path):  # noqa: F811
    with pytest.raises(OutputRefused, match="is not an output path"):
        runner.collect_outputs("j-none", (JobOutputSpec(name="x", path="../../etc/passwd"),), into=str(tmp_path),
                               max_bytes=10)
