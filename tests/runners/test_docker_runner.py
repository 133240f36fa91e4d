"""The Docker runner: the exact request it sends (GPUs included, no GPU needed), and a real
launch on this machine's engine of a tiny image made from the local base image."""

import io
import tarfile
import time
import urllib.request
import uuid
from pathlib import Path

import docker
import pytest
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest

from runners.base import LABEL_DEPLOYMENT, LABEL_HUB, Gpu, LaunchSpec, NodeUnreachable, Resources, RunnerError, RunPhase, Volume
from runners.docker import DockerRunner, container_options
from runners.harness import threads as harness_threads
from tests.environment import unavailable

BASE_IMAGE = "hub-base:bookworm"

# Answers /ready, and /boots with the lines it appended to /data/boots.txt at each start.
SERVER = """\
import http.server, os, pathlib
boots = pathlib.Path("/data/boots.txt")
with boots.open("a") as file:
    file.write("boot\\n")
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = boots.read_text().encode() if self.path == "/boots" else b"ready"
        self.send_response(200); self.end_headers(); self.wfile.write(body)
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
"""
DOCKERFILE = f"""\
FROM {BASE_IMAGE}
COPY server.py /opt/server.py
CMD ["python3", "/opt/server.py"]
"""


def gpu_spec(**overrides) -> LaunchSpec:
    fields = dict(
        deployment="d-7k2m9x4q", image="aihub/minilm:abc", port=8080,
        resources=Resources(gpus=2, gpu_memory_gb=24, cpu=1.5, memory_gb=2),
        environment={"INPUT_METRIC": "cosine"}, volume=Volume(path="/data"), max_body_bytes=2048,
        labels={"io.aihub.template": "minilm"},
    )
    return LaunchSpec(**{**fields, **overrides})


def test_the_options_harden_the_container_and_ask_for_the_gpus():
    options = container_options(gpu_spec(), address="10.0.0.7", hub_id="hub-1")

    assert options.pop("device_requests") == [DeviceRequest(count=2, capabilities=[["gpu"]])]
    assert options == {
        "name": "aihub-d-7k2m9x4q",
        "image": "aihub/minilm:abc",
        "user": "65532:65532",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "read_only": True,
        "tmpfs": {"/tmp": "rw,noexec,nosuid,size=256m"},
        "mem_limit": 2 * 1024**3,
        "memswap_limit": 2 * 1024**3,
        "nano_cpus": 1_500_000_000,
        "pids_limit": 1024,
        "privileged": False,
        "network_mode": "bridge",
        "extra_hosts": {"host.docker.internal": "host-gateway"},
        "ports": {"8080/tcp": ("10.0.0.7", None)},
        "labels": {"io.aihub.template": "minilm", LABEL_DEPLOYMENT: "d-7k2m9x4q", LABEL_HUB: "hub-1"},
        "environment": {"INPUT_METRIC": "cosine", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                        "HUB_MAX_BODY_BYTES": "2048", "HUB_STORAGE_DIR": "/data"},
        "restart_policy": {"Name": "no"},
        "volumes": {"aihub-d-7k2m9x4q-data": {"bind": "/data", "mode": "rw"}},
    }


def test_the_device_request_is_what_the_engine_receives():
    request = container_options(gpu_spec(), address="127.0.0.1", hub_id="h")["device_requests"][0]
    assert dict(request) == {"Driver": "", "Count": 2, "DeviceIDs": [], "Capabilities": [["gpu"]], "Options": {}}


def test_a_cpu_job_asks_for_no_gpu_no_port_and_runs_its_command():
    spec = LaunchSpec(deployment="j-1", image="aihub/train:1", kind="job", command=("python", "train.py"))
    options = container_options(spec, address="127.0.0.1", hub_id="h")
    assert "device_requests" not in options and "volumes" not in options
    assert options["ports"] == {}
    assert options["entrypoint"] == ["python", "train.py"]


def test_labels_of_the_spec_cannot_disown_the_container():
    spec = gpu_spec(labels={LABEL_DEPLOYMENT: "d-someone-else", LABEL_HUB: "other-hub"})
    labels = container_options(spec, address="127.0.0.1", hub_id="hub-1")["labels"]
    assert labels == {LABEL_DEPLOYMENT: "d-7k2m9x4q", LABEL_HUB: "hub-1"}


def test_an_environment_cannot_turn_offline_mode_off():
    environment = container_options(gpu_spec(environment={"HF_HUB_OFFLINE": "0"}), address="a", hub_id="h")["environment"]
    assert environment["HF_HUB_OFFLINE"] == "1"


def test_a_handle_that_is_not_a_plain_name_is_refused():
    with pytest.raises(RunnerError, match="is not a deployment handle"):
        container_options(gpu_spec(deployment="../x"), address="a", hub_id="h")


def test_an_engine_that_does_not_answer_is_unreachable(tmp_path):
    runner = DockerRunner(base_url=f"unix://{tmp_path}/no-engine.sock")
    with pytest.raises(NodeUnreachable, match="does not answer"):
        runner.status("d-1")


def test_declared_gpus_are_the_inventorys():
    gpus = (Gpu(model="NVIDIA H200", memory_gb=140.4),)
    assert DockerRunner(gpus=gpus)._gpus() == gpus


# --- a real engine -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def client():
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except DockerException as error:
        unavailable(f"no Docker Engine answers ({error})")
    try:
        client.images.get(BASE_IMAGE)
    except ImageNotFound:
        unavailable(f"the base image {BASE_IMAGE} is missing: run `python manage.py make_base_image --name {BASE_IMAGE}`")
    return client


@pytest.fixture(scope="module")
def image(client):
    tag = f"aihub-runner-test/server:{uuid.uuid4().hex[:12]}"
    client.images.build(fileobj=_context(), custom_context=True, tag=tag, network_mode="none", rm=True, forcerm=True)
    yield tag
    client.images.remove(tag, force=True)


@pytest.fixture
def runner(client):
    hub_id = f"test-{uuid.uuid4().hex[:8]}"
    runner = DockerRunner(hub_id=hub_id)
    yield runner
    for container in client.containers.list(all=True, filters={"label": f"{LABEL_HUB}={hub_id}"}):
        container.remove(force=True)
    for volume in client.volumes.list(filters={"label": f"{LABEL_HUB}={hub_id}"}):
        volume.remove(force=True)


def _context() -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, text in (("Dockerfile", DOCKERFILE), ("server.py", SERVER)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def _get(url: str, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            assert time.monotonic() < deadline, f"{url} did not answer in {timeout}s"
            time.sleep(0.1)


def test_a_real_launch_is_hardened_reachable_and_keeps_its_volume(client, image, runner):
    deployment = f"d-{uuid.uuid4().hex[:8]}"
    spec = LaunchSpec(deployment=deployment, image=image, resources=Resources(cpu=0.5, memory_gb=0.25),
                      volume=Volume(path="/data"), labels={"io.aihub.template": "server"})

    state = runner.launch(spec)
    assert state.phase == RunPhase.RUNNING
    assert state.endpoint.startswith("http://127.0.0.1:")
    assert _get(state.endpoint + "/ready") == "ready"
    assert _get(state.endpoint + "/boots") == "boot\n"

    attrs = client.containers.get(f"aihub-{deployment}").attrs
    host = attrs["HostConfig"]
    assert attrs["Config"]["User"] == "65532:65532"
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,size=256m"}
    assert host["Memory"] == 256 * 1024**2
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 1024
    assert host["Privileged"] is False
    assert host["NetworkMode"] not in ("host",) and host["NetworkMode"] in ("bridge", "default")
    assert host["RestartPolicy"]["Name"] in ("no", "")
    bindings = host["PortBindings"]["8080/tcp"]
    assert [binding["HostIp"] for binding in bindings] == ["127.0.0.1"]
    assert {b["HostIp"] for b in attrs["NetworkSettings"]["Ports"]["8080/tcp"]} == {"127.0.0.1"}
    assert attrs["Config"]["Labels"][LABEL_DEPLOYMENT] == deployment
    assert attrs["Config"]["Labels"][LABEL_HUB] == runner.hub_id
    assert attrs["Config"]["Labels"]["io.aihub.template"] == "server"
    assert [mount["Name"] for mount in attrs["Mounts"]] == [f"aihub-{deployment}-data"]

    # Killed from outside: exited, with the code the engine saw.
    client.containers.get(f"aihub-{deployment}").kill()
    deadline = time.monotonic() + 20
    while (state := runner.status(deployment)).phase != RunPhase.EXITED:
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert state.exit_code == 137
    assert "137" in state.detail

    # Stopped: the container goes, the volume stays and is there at the next launch.
    runner.stop(deployment)
    assert runner.status(deployment).phase == RunPhase.MISSING
    client.volumes.get(f"aihub-{deployment}-data")
    state = runner.launch(spec)
    assert _get(state.endpoint + "/boots") == "boot\nboot\n"

    # Removed: the volume goes too.
    runner.remove(deployment)
    assert runner.status(deployment).phase == RunPhase.MISSING
    with pytest.raises(NotFound):
        client.volumes.get(f"aihub-{deployment}-data")
    runner.remove(deployment)  # idempotent


def test_launch_replaces_the_container_of_the_same_deployment(client, image, runner):
    deployment = f"d-{uuid.uuid4().hex[:8]}"
    spec = LaunchSpec(deployment=deployment, image=image, resources=Resources(cpu=0.5, memory_gb=0.25),
                      volume=Volume(path="/data"))
    first = runner.launch(spec)
    first_id = client.containers.get(f"aihub-{deployment}").id
    second = runner.launch(spec)
    assert client.containers.get(f"aihub-{deployment}").id != first_id
    assert second.phase == RunPhase.RUNNING and first.endpoint
    assert _get(second.endpoint + "/ready") == "ready"


def test_list_sees_only_this_hubs_containers(client, image, runner):
    deployment = f"d-{uuid.uuid4().hex[:8]}"
    stranger = client.containers.create(image, name=f"stranger-{deployment}", labels={LABEL_HUB: "another-hub"})
    try:
        runner.launch(LaunchSpec(deployment=deployment, image=image, resources=Resources(cpu=0.5, memory_gb=0.25)))
        assert [(state.deployment, state.phase) for state in runner.list()] == [(deployment, RunPhase.RUNNING)]
    finally:
        stranger.remove(force=True)


def test_a_job_exits_with_its_code_and_keeps_its_logs(client, image, runner):
    deployment = f"j-{uuid.uuid4().hex[:8]}"
    spec = LaunchSpec(deployment=deployment, image=image, kind="job",
                      command=("python3", "-c", "print('training done'); raise SystemExit(3)"))
    runner.launch(spec)
    deadline = time.monotonic() + 20
    while (state := runner.status(deployment)).phase != RunPhase.EXITED:
        assert time.monotonic() < deadline, state
        time.sleep(0.1)
    assert (state.exit_code, state.endpoint) == (3, None)
    assert "training done" in runner.logs(deployment)


def test_a_missing_image_is_a_clear_error_and_leaves_nothing(client, runner):
    deployment = f"d-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RunnerError, match="is not on this node and pulling it failed"):
        runner.launch(LaunchSpec(deployment=deployment, image="127.0.0.1:1/aihub/absent:1"))
    assert runner.status(deployment).phase == RunPhase.MISSING


@pytest.mark.parametrize(("limits", "threads"), [
    ({"nano_cpus": 500_000_000}, lambda cores: 1),
    ({"nano_cpus": 1_500_000_000}, lambda cores: min(2, cores)),
    ({"cpuset_cpus": "0"}, lambda cores: 1),
    ({}, lambda cores: cores),
])
def test_a_container_sizes_its_model_thread_pools_by_its_cpu_limit(client, limits, threads):
    """The harness's reading of a real container's cgroup (`cpu: 0.5` on the engine is
    `--cpus 0.5`): the libraries themselves would count the node's every core."""
    program = Path(harness_threads.__file__).read_text() + "\nprint(len(os.sched_getaffinity(0)), usable_cpus())\n"
    output = client.containers.run(BASE_IMAGE, ["python3", "-c", program], remove=True, network_mode="none", **limits)
    cores, usable = map(int, output.split())
    assert usable == threads(cores)
