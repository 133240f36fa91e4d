"""The swarm runner's requests and readings as plain data (the real swarm: tests/deployments/test_swarm_flow.py)."""

from types import SimpleNamespace

import pytest
from docker.errors import NotFound

from deployments.models import Node
from hub_site.backends import runner_for
from runners.base import LaunchSpec, NodeLost, Resources, RunnerError, RunPhase, Volume
from runners.swarm import HUB_NODE_LABEL, SwarmRunner, service_options, swarm_node_of

IMAGE = "127.0.0.1:5000/aihub/echo@sha256:" + "a" * 64


def _node_attrs(labels: dict[str, str]) -> dict:
    return {
        "ID": "node1", "Spec": {"Labels": labels, "Availability": "drain"}, "Status": {"State": "down", "Addr": "10.0.0.7"},
        "Description": {"Hostname": "gpu-1", "Resources": {"NanoCPUs": 8_000_000_000, "MemoryBytes": 32 * 1024**3,
                        "GenericResources": [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 4}}]}},
    }


def test_it_reads_a_node_with_discrete_gpus_its_price_and_availability():
    node = swarm_node_of(_node_attrs({"price_per_hour": "2.40", "gpu_model": "A100", "gpu_memory_gb": "80"}))

    assert (node.inventory.cpus, node.inventory.memory_gb, len(node.inventory.gpus)) == (8.0, 32.0, 4)
    assert node.inventory.gpus[0].model == "A100" and node.inventory.gpus[0].memory_gb == 80.0
    assert str(node.price_per_hour) == "2.40" and not node.ready and not node.active


@pytest.mark.parametrize("price", ["-1", "NaN", "cheap", "Infinity"])
def test_it_refuses_a_price_label_that_is_not_a_number_of_0_or_more(price):
    with pytest.raises(RunnerError, match=r"has the label price_per_hour=.*: set a number of 0 or more"):
        swarm_node_of(_node_attrs({"price_per_hour": price}))


def test_it_asks_for_whole_gpus_as_generic_resources_and_no_gpu_without_them():
    gpu = service_options(LaunchSpec(deployment="d-1", image=IMAGE, resources=Resources(gpus=2)), node_id="n", hub_id="h")
    plain = service_options(LaunchSpec(deployment="d-2", image=IMAGE), node_id="n", hub_id="h")

    assert gpu["resources"]["Reservations"]["GenericResources"] == [{"DiscreteResourceSpec": {"Kind": "NVIDIA-GPU", "Value": 2}}]
    assert "GenericResources" not in plain["resources"]["Reservations"]
    assert gpu["constraints"] == ["node.id==n"]


@pytest.mark.parametrize(("spec", "phrase"), [
    (LaunchSpec(deployment="d-1", image=IMAGE, kind="job", command=("python", "train.py")), "is a job"),
    (LaunchSpec(deployment="d-1", image=IMAGE, volume=Volume(path="/data")), "declares storage"),
    (LaunchSpec(deployment="../etc", image=IMAGE), "is not a deployment handle"),
])
def test_it_refuses_what_it_cannot_run_with_a_reason(spec, phrase):
    with pytest.raises(RunnerError, match=phrase):
        service_options(spec, node_id="n", hub_id="h")


def test_a_swarm_node_row_gets_the_swarm_runner_of_its_node(db):
    node = Node(name="gpu-1", runner="swarm", engine_url="tcp://10.0.0.1:2375", address="10.0.0.7",
                labels={HUB_NODE_LABEL: "node1"}, cpus=1, memory_gb=1)
    runner = runner_for(node)

    assert isinstance(runner, SwarmRunner)
    assert (runner.node_id, runner.base_url, runner.address) == ("node1", "tcp://10.0.0.1:2375", "10.0.0.7")
    node.labels = {}
    with pytest.raises(RunnerError, match="needs its node id"):
        runner_for(node)


class _Service:
    def __init__(self, tasks: list[dict]):
        self.attrs = {"Spec": {"Mode": {"Replicated": {"Replicas": 1}}}}
        self._tasks = tasks

    def tasks(self) -> list[dict]:
        return self._tasks


def test_a_task_stopped_for_a_sleep_is_not_the_state_of_the_run_woken_after_it():
    runner = SwarmRunner(node_id="node1")
    stopped = {"CreatedAt": "2026-11-29T21:34:41.9Z", "Status": {"State": "shutdown"}}
    # Go drops trailing zeros: .10 is .1, later than .09 though it sorts before as text.
    crashed = {"CreatedAt": "2026-11-29T21:34:42.09Z", "Status": {"State": "failed", "Err": "task: non-zero exit (3)",
                                                                   "ContainerStatus": {"ExitCode": 3}}}
    woken = {"CreatedAt": "2026-11-29T21:34:42.1Z", "Status": {"State": "starting"}}

    assert runner._state_of("d-1", _Service([stopped])).phase == RunPhase.STARTING
    assert runner._state_of("d-1", _Service([stopped, crashed, woken])).phase == RunPhase.STARTING
    died = runner._state_of("d-1", _Service([stopped, crashed]))
    assert (died.phase, died.exit_code, died.detail) == (RunPhase.EXITED, 3, "its task is failed: task: non-zero exit (3)")


class _Nodes:
    def __init__(self, attrs: dict | None):
        self.attrs = attrs

    def get(self, node_id: str):
        if self.attrs is None:
            raise NotFound("node not found")
        return self


@pytest.mark.parametrize(("state", "availability", "message"), [
    (None, None, "left the swarm (the manager has no node node1)"),
    ("down", "active", "left the swarm (the manager reports it down: heartbeat failure)"),
    ("ready", "drain", "was drained in the swarm"),
])
def test_a_node_the_manager_reports_gone_down_or_drained_is_lost(state, availability, message):
    runner = SwarmRunner(node_id="node1")
    attrs = None if state is None else {"Status": {"State": state, "Message": "heartbeat failure"},
                                        "Spec": {"Availability": availability}}
    runner.__dict__["client"] = SimpleNamespace(nodes=_Nodes(attrs))  # what the manager would answer

    for call in (runner.list, lambda: runner.launch(LaunchSpec(deployment="d-1", image=IMAGE))):
        with pytest.raises(NodeLost) as lost:
            call()
        assert str(lost.value).startswith(message)
