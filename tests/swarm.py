"""A real two-node Docker Swarm and a real image registry, made of extra processes beside
the machine's own Docker Engine, which they never touch: each extra engine has its own
socket, data-root, exec-root, pidfile and bridge (never `--bridge none`, which would delete
the primary engine's docker0). Node A advertises 1 fake GPU, node B 2, as the generic
resource NVIDIA-GPU; A is the manager on 127.0.0.1, B a worker on 127.0.0.2 (another
loopback address, so their gossip ports do not collide)."""

import contextlib
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import yaml

from .environment import unavailable
from .netutil import free_port, wait_for_port

ENGINE_START_SECONDS = 30


# The manager marks a node down after a few missed heartbeats (the default, 5 s each, takes
# about 15 s); a test about to stop a node shortens them (`heartbeat_shorten`), not earlier,
# so a node of a busy test machine is never taken for down meanwhile.
SHORT_HEARTBEAT_SECONDS = 1


@dataclass(frozen=True)
class Swarm:
    manager_url: str
    node_ids: dict[str, str]  # "a" / "b" → the swarm's node id
    engine_urls: dict[str, str]
    engines: dict[str, subprocess.Popen]

    def engine_stop(self, name: str) -> None:
        """Stop one node's engine, as when its machine goes away."""
        _engine_stop(self.engines[name])

    def heartbeat_shorten(self) -> None:
        api = docker.APIClient(base_url=self.manager_url, timeout=10)
        current = api.inspect_swarm()
        spec = {**current["Spec"], "Dispatcher": {"HeartbeatPeriod": SHORT_HEARTBEAT_SECONDS * 10**9}}
        api.update_swarm(version=current["Version"]["Index"], swarm_spec=spec)

    def wait_until_down(self, name: str, timeout: float = 60) -> dict:
        """The manager's record of node `name` once it reports it down."""
        manager = docker.DockerClient(base_url=self.manager_url, timeout=10)
        deadline = time.monotonic() + timeout
        while True:
            attrs = manager.nodes.get(self.node_ids[name]).attrs
            if attrs["Status"]["State"] == "down" or time.monotonic() > deadline:
                return attrs
            time.sleep(0.5)


@contextlib.contextmanager
def registry_serving(root: Path) -> Iterator[str]:
    """`docker-registry serve` on a free loopback port, storing under `root`; yields host:port."""
    if not shutil.which("docker-registry"):
        unavailable("Debian's docker-registry package is not installed")
    port = free_port()
    config = root / "registry.yml"
    config.write_text(yaml.safe_dump({
        "version": 0.1,
        "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }))
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for_port(port, 20):
            raise RuntimeError("docker-registry did not start")
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def two_node_swarm(prices: dict[str, str]) -> Iterator[Swarm]:
    _require_tools()
    root = Path(tempfile.mkdtemp(prefix="hubsw-", dir="/tmp"))  # short: a unix socket path has 108 bytes
    tag = uuid.uuid4().hex[:6]
    engines: dict[str, subprocess.Popen] = {}
    bridges: list[str] = []
    try:
        urls = {}
        for name, gpus in (("a", 1), ("b", 2)):
            bridge = f"hsw{tag}{name}"
            _bridge_add(bridge)
            bridges.append(bridge)
            urls[name], engines[name] = _engine_start(root / name, bridge, [f"GPU-{name}{index}" for index in range(gpus)])
        clients = {name: docker.DockerClient(base_url=url, timeout=60) for name, url in urls.items()}
        manager_port = free_port()
        clients["a"].swarm.init(advertise_addr="127.0.0.1", listen_addr=f"127.0.0.1:{manager_port}")
        token = clients["a"].swarm.attrs["JoinTokens"]["Worker"]
        clients["b"].swarm.join(remote_addrs=[f"127.0.0.1:{manager_port}"], join_token=token,
                                listen_addr=f"127.0.0.2:{_free_port_on('127.0.0.2')}", advertise_addr="127.0.0.2")
        node_ids = {name: client.info()["Swarm"]["NodeID"] for name, client in clients.items()}
        for name, node_id in node_ids.items():
            node = clients["a"].nodes.get(node_id)
            spec = {**node.attrs["Spec"], "Labels": {"price_per_hour": prices[name], "gpu_model": "FAKE-GPU",
                                                      "gpu_memory_gb": "16"}}
            node.update(spec)
        yield Swarm(manager_url=urls["a"], node_ids=node_ids, engine_urls=urls, engines=engines)
    finally:
        for process in reversed(engines.values()):
            _engine_stop(process)
        for bridge in bridges:
            subprocess.run(["ip", "link", "del", bridge], capture_output=True)
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def _require_tools() -> None:
    if os.geteuid() != 0:
        unavailable("starting extra Docker Engines needs root")
    for tool in ("dockerd", "ip", "docker-registry"):
        if not shutil.which(tool):
            unavailable(f"{tool} is not installed")


def _bridge_add(name: str) -> None:
    subnet = _unused_subnet()
    for command in (["ip", "link", "add", "name", name, "type", "bridge"],
                    ["ip", "addr", "add", f"{subnet[1]}/{subnet.prefixlen}", "dev", name],
                    ["ip", "link", "set", name, "up"]):
        subprocess.run(command, check=True, capture_output=True)


def _unused_subnet() -> ipaddress.IPv4Network:
    taken = [ipaddress.ip_interface(word).network for line in subprocess.run(
        ["ip", "-4", "-o", "addr"], capture_output=True, text=True, check=True).stdout.splitlines()
        for word in line.split() if "/" in word and word[0].isdigit()]
    for third in range(200, 255):
        candidate = ipaddress.ip_network(f"172.31.{third}.0/24")
        if not any(candidate.overlaps(network) for network in taken):
            return candidate
    raise RuntimeError("no free 172.31.x.0/24 subnet for a test bridge")


def _engine_start(folder: Path, bridge: str, gpus: list[str]) -> tuple[str, subprocess.Popen]:
    folder.mkdir()
    url = f"unix://{folder}/docker.sock"
    gpu_options = [option for gpu in gpus for option in ("--node-generic-resource", f"NVIDIA-GPU={gpu}")]
    process = subprocess.Popen(
        ["dockerd", "-H", url, "--data-root", str(folder / "data"), "--exec-root", str(folder / "exec"),
         "--pidfile", str(folder / "docker.pid"), "--bridge", bridge, "--iptables=false", "--ip-masq=false",
         "--no-new-privileges", *gpu_options],
        stdout=open(folder / "dockerd.log", "wb"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + ENGINE_START_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(docker.errors.DockerException):
            docker.DockerClient(base_url=url, timeout=3).ping()
            return url, process
        if process.poll() is not None:
            break
        time.sleep(0.2)
    _engine_stop(process)
    raise RuntimeError(f"an extra Docker Engine did not start: {(folder / 'dockerd.log').read_text()[-2000:]}")


def _engine_stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _unmount_under(root: Path) -> None:
    """What a stopped engine can leave mounted (network namespaces), deepest first."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m.startswith(f"{root}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True)


def _free_port_on(address: str) -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]
