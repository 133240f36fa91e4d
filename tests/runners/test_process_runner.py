"""The process runner on real processes: a venv build made by hand (its venv is the template
environment), the harness copied in as the venv backend does, and a tiny handler."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from runners.base import LaunchSpec, RunnerError, RunPhase, Volume
from runners.process import ProcessRunner, memory_total_gb, parse_nvidia_smi
from runners.supervise import process_stat
from tests.harness.support import template_python

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "venv://aihub/probe:0123abcd"

HANDLER = textwrap.dedent('''
    import os
    from pathlib import Path


    class Probe:
        def setup(self):
            storage = os.environ.get("HUB_STORAGE_DIR")
            self.boots = None
            if storage:
                with open(Path(storage) / "boots.txt", "a") as file:
                    file.write("boot\\n")
                self.boots = len((Path(storage) / "boots.txt").read_text().splitlines())

        def predict(self, batch):
            return [{"boots": self.boots, "secret": os.environ.get("HUB_TEST_SECRET"),
                     "offline": os.environ.get("HF_HUB_OFFLINE"), "greeting": os.environ.get("GREETING")}
                    for _ in batch]
''')


@pytest.fixture(scope="module")
def venv_root(tmp_path_factory) -> Path:
    """A venv build laid out as VenvBackend leaves it: venv/, harness/, template/, .complete."""
    python = template_python()
    root = tmp_path_factory.mktemp("venvs")
    build = root / "aihub_probe" / "0123abcd"
    build.mkdir(parents=True)
    (build / "venv").symlink_to(python.parent.parent)
    shutil.copytree(ROOT / "runners" / "harness", build / "harness", ignore=shutil.ignore_patterns("__pycache__", "testing.py"))
    (build / "template").mkdir()
    (build / "template" / "handler.py").write_text(HANDLER)
    manifest = {"schema": "hub/v1", "name": "probe", "version": "1.0.0", "tier": "atomic", "kind": "service",
                "title": "Probe", "summary": "A probe for runner tests.", "license": "MIT",
                "serve": {"handler": "handler:Probe"}}
    (build / "template" / "hub.yaml").write_text(yaml.safe_dump(manifest))
    (build / ".complete").write_text("")
    return root


@pytest.fixture
def runner(tmp_path, venv_root):
    runner = ProcessRunner(tmp_path / "runs", venv_root, stop_grace=5)
    yield runner
    for state in runner.list():
        runner.remove(state.deployment)


def service(deployment: str = "d-probe", **options) -> LaunchSpec:
    return LaunchSpec(deployment=deployment, image=IMAGE, environment={"HUB_DEVICE": "cpu", "GREETING": "hi"}, **options)


def job(deployment: str, *command: str) -> LaunchSpec:
    return LaunchSpec(deployment=deployment, image=IMAGE, kind="job", command=command)


def wait_for_phase(runner, deployment, phase, timeout=60):
    deadline = time.monotonic() + timeout
    while (state := runner.status(deployment)).phase != phase:
        assert time.monotonic() < deadline, f"still {state} after {timeout}s; log:\n{runner.logs(deployment)}"
        time.sleep(0.1)
    return state


def wait_until_ready(endpoint: str, timeout=60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(endpoint + "/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{endpoint} not ready after {timeout}s"
        time.sleep(0.1)


def predict(endpoint: str) -> dict:
    request = urllib.request.Request(endpoint + "/predict", data=b'{"x": 1}', headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def recorded_pid(runner, deployment) -> int:
    return int((runner.run_root / deployment / "pid").read_text().split()[0])


def test_it_serves_a_venv_build_and_another_process_sees_it(runner, monkeypatch):
    monkeypatch.setenv("HUB_TEST_SECRET", "the hub's own secret")
    first = runner.launch(service())
    assert first.phase in (RunPhase.STARTING, RunPhase.RUNNING)
    state = wait_for_phase(runner, "d-probe", RunPhase.RUNNING)
    wait_until_ready(state.endpoint)

    answer = predict(state.endpoint)
    assert answer == {"boots": None, "secret": None, "offline": "1", "greeting": "hi"}  # the hub's env never leaks
    # A runner made elsewhere (a web process, the reconciler) reads the same files.
    elsewhere = ProcessRunner(runner.run_root, runner.venv_root)
    assert elsewhere.status("d-probe") == state
    assert [s.deployment for s in elsewhere.list()] == ["d-probe"]
    assert "serving handler:Probe" in elsewhere.logs("d-probe")
    assert len(elsewhere.logs("d-probe", tail=1).splitlines()) == 1


def test_a_killed_process_is_exited_with_its_signal(runner):
    runner.launch(service())
    wait_for_phase(runner, "d-probe", RunPhase.RUNNING)
    os.kill(recorded_pid(runner, "d-probe"), signal.SIGKILL)

    state = wait_for_phase(runner, "d-probe", RunPhase.EXITED, timeout=10)
    assert (state.exit_code, state.detail, state.endpoint) == (137, "killed by SIGKILL", None)


def test_stop_ends_the_run_and_its_volume_outlives_it_until_remove(runner):
    spec = service(volume=Volume(path="/data"))
    state = runner.launch(spec)
    state = wait_for_phase(runner, "d-probe", RunPhase.RUNNING)
    wait_until_ready(state.endpoint)
    assert predict(state.endpoint)["boots"] == 1
    pid = recorded_pid(runner, "d-probe")

    runner.stop("d-probe")
    assert runner.status("d-probe").phase == RunPhase.STOPPED
    assert process_stat(pid) is None or process_stat(pid)[0] in "ZX"
    runner.stop("d-probe")  # stopping what is stopped is fine

    state = runner.launch(spec)
    state = wait_for_phase(runner, "d-probe", RunPhase.RUNNING)
    wait_until_ready(state.endpoint)
    assert predict(state.endpoint)["boots"] == 2  # the same storage, written again

    runner.remove("d-probe")
    assert runner.status("d-probe").phase == RunPhase.MISSING
    assert not (runner.run_root / "d-probe").exists()
    runner.remove("d-probe")  # idempotent


def test_launch_replaces_a_running_run_of_the_same_deployment(runner):
    runner.launch(service())
    wait_for_phase(runner, "d-probe", RunPhase.RUNNING)
    old_pid = recorded_pid(runner, "d-probe")

    runner.launch(service())
    assert recorded_pid(runner, "d-probe") != old_pid
    assert process_stat(old_pid) is None or process_stat(old_pid)[0] in "ZX"
    wait_for_phase(runner, "d-probe", RunPhase.RUNNING)


def test_a_job_runs_with_the_venvs_python_in_its_template_folder_and_reports_its_exit_code(runner, venv_root):
    script = "import os, sys; print(sys.prefix, os.getcwd()); sys.exit(3)"
    runner.launch(job("j-three", "python", "-c", script))

    state = wait_for_phase(runner, "j-three", RunPhase.EXITED, timeout=20)
    assert (state.exit_code, state.detail, state.endpoint) == (3, "exited with code 3", None)
    build = venv_root / "aihub_probe" / "0123abcd"
    prefix, cwd = runner.logs("j-three").split()
    assert Path(cwd) == build / "template"
    assert Path(prefix).resolve() == (build / "venv").resolve()


def test_the_exit_code_is_recorded_after_the_launching_process_is_gone(runner, tmp_path):
    # The job exits once the test says so, not after a fixed sleep a loaded machine outlasts.
    go = tmp_path / "go"
    job_code = f"import os, sys, time\nwhile not os.path.exists({str(go)!r}): time.sleep(0.05)\nsys.exit(5)"
    launcher = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from pathlib import Path
        from runners.base import LaunchSpec
        from runners.process import ProcessRunner
        runner = ProcessRunner(Path({str(runner.run_root)!r}), Path({str(runner.venv_root)!r}))
        runner.launch(LaunchSpec(deployment="j-late", image={IMAGE!r}, kind="job",
                                 command=("python", "-c", {job_code!r})))
    """)
    subprocess.run([sys.executable, "-c", launcher], check=True, timeout=30)

    assert runner.status("j-late").phase == RunPhase.RUNNING
    go.touch()
    state = wait_for_phase(runner, "j-late", RunPhase.EXITED, timeout=20)
    assert state.exit_code == 5


def test_a_reused_pid_is_neither_alive_nor_signalled(runner):
    runner.launch(job("j-reuse", "python", "-c", "pass"))
    wait_for_phase(runner, "j-reuse", RunPhase.EXITED, timeout=20)
    pid_file = runner.run_root / "j-reuse" / "pid"
    _, start, *supervisor = pid_file.read_text().split()
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        # The stranger now holds the recorded pid (as after a reuse), but it started at another time.
        pid_file.write_text(" ".join([str(stranger.pid), start, *supervisor]))
        assert runner.status("j-reuse").phase == RunPhase.EXITED
        runner.stop("j-reuse")
        assert stranger.poll() is None, "stop() signalled a process that is not the deployment's"
    finally:
        stranger.kill()
        stranger.wait()


def test_a_zombie_is_not_alive(runner):
    runner.launch(job("j-zombie", "python", "-c", "pass"))
    wait_for_phase(runner, "j-zombie", RunPhase.EXITED, timeout=20)
    zombie = subprocess.Popen(["true"])  # exits, and stays a zombie until we wait for it
    try:
        deadline = time.monotonic() + 10
        while process_stat(zombie.pid)[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        pid_file = runner.run_root / "j-zombie" / "pid"
        _, _, *supervisor = pid_file.read_text().split()
        pid_file.write_text(" ".join([str(zombie.pid), str(process_stat(zombie.pid)[1]), *supervisor]))
        assert runner.status("j-zombie").phase == RunPhase.EXITED
    finally:
        zombie.wait()


@pytest.mark.parametrize("handle", ["../escape", "/etc", ".hidden", "a/b", "", "x" * 64])
def test_a_handle_that_is_not_a_plain_name_is_refused(runner, handle, tmp_path):
    with pytest.raises(RunnerError, match="is not a deployment handle"):
        runner.launch(service(handle))
    with pytest.raises(RunnerError, match="is not a deployment handle"):
        runner.remove(handle)
    assert not (tmp_path / "escape").exists()
    assert not runner.run_root.exists() or list(runner.run_root.iterdir()) == []


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("aihub/probe:0123abcd", "runs venv builds"),
        ("venv://aihub/other:0123abcd", "is not on this node"),
        ("venv://aihub/probe:../../x", "is not a venv build reference"),
    ],
)
def test_an_image_it_cannot_run_is_refused_with_what_to_do(runner, image, message):
    with pytest.raises(RunnerError, match=message):
        runner.launch(LaunchSpec(deployment="d-wrong", image=image))
    assert runner.status("d-wrong").phase == RunPhase.MISSING


def test_a_job_whose_command_does_not_exist_leaves_nothing_behind(runner):
    with pytest.raises(RunnerError, match="could not start no-such-program"):
        runner.launch(job("j-missing", "no-such-program"))
    assert runner.status("j-missing").phase == RunPhase.MISSING
    assert runner.list() == []


def test_status_logs_and_stop_of_an_unknown_deployment_are_calm(runner):
    assert runner.status("d-never").phase == RunPhase.MISSING
    assert runner.logs("d-never") == ""
    runner.stop("d-never")
    assert runner.list() == []


def test_it_reads_nvidia_smi_output():
    sample = "NVIDIA H200, 143771\nNVIDIA A100-SXM4-80GB, 81920\n\n"
    gpus = parse_nvidia_smi(sample)
    assert [(gpu.model, gpu.memory_gb) for gpu in gpus] == [("NVIDIA H200", 140.4), ("NVIDIA A100-SXM4-80GB", 80.0)]
    assert parse_nvidia_smi("") == ()
    with pytest.raises(RunnerError, match="cannot read"):
        parse_nvidia_smi("NVIDIA H200, [N/A]")


def test_it_reads_total_memory():
    assert memory_total_gb("MemTotal:       24684092 kB\nMemFree: 1 kB\n") == 23.5
    with pytest.raises(RunnerError):
        memory_total_gb("MemFree: 1 kB\n")


def test_its_inventory_is_this_machine(runner):
    inventory = runner.inventory()
    assert inventory.cpus == os.cpu_count()
    assert inventory.memory_gb > 0
    if shutil.which("nvidia-smi") is None:
        assert inventory.gpus == ()
