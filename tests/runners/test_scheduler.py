import random
from decimal import Decimal

import pytest

from runners.base import Resources
from runners.scheduler import NodeCapacity, NoNodeFits, place


def node(name: str, price: str = "1.00", *, cpus: float = 8, memory: float = 32, gpus: tuple[float, ...] = (),
         cpus_total: float = 8, memory_total: float = 32) -> NodeCapacity:
    return NodeCapacity(name=name, price_per_hour=Decimal(price), cpus_free=cpus, memory_free_gb=memory, gpus_free=gpus,
                        cpus_total=cpus_total, memory_total_gb=memory_total)


def test_it_places_on_the_cheapest_node_that_fits():
    nodes = [node("pricey", "3.00"), node("cheap", "0.50"), node("middle", "1.00")]
    placement = place(Resources(cpu=2, memory_gb=4), nodes)
    assert (placement.node, placement.price_per_hour) == ("cheap", Decimal("0.50"))


def test_it_skips_a_cheaper_node_that_is_full():
    nodes = [node("cheap-full", "0.10", cpus=1), node("dearer", "0.90")]
    assert place(Resources(cpu=2), nodes).node == "dearer"


def test_a_tie_on_price_goes_to_the_emptiest_node():
    nodes = [node("busy", cpus=2, memory=8), node("empty", cpus=8, memory=32), node("half", cpus=4, memory=16)]
    assert place(Resources(cpu=1), nodes).node == "empty"


def test_a_request_that_fills_a_node_exactly_fits():
    # 0.1 + 0.2 free after earlier deployments: float sums must not refuse an exact fit.
    assert place(Resources(cpu=0.3, memory_gb=1), [node("a", cpus=0.1 + 0.2, memory=1)]).node == "a"


def test_a_gpu_request_needs_enough_gpus_with_enough_memory_each():
    nodes = [
        node("small-gpus", "0.50", gpus=(16, 16, 16)),
        node("one-big", "0.80", gpus=(80,)),
        node("two-big", "2.00", gpus=(24, 40)),
    ]
    assert place(Resources(gpus=1, gpu_memory_gb=24), nodes).node == "one-big"
    assert place(Resources(gpus=2, gpu_memory_gb=24), nodes).node == "two-big"
    assert place(Resources(gpus=3, gpu_memory_gb=8), nodes).node == "small-gpus"


def test_a_cpu_request_may_land_on_a_gpu_node():
    assert place(Resources(cpu=1), [node("gpu-node", "0.2", gpus=(16,)), node("cpu-node", "0.3")]).node == "gpu-node"


@pytest.mark.parametrize(
    ("request_", "nodes", "message"),
    [
        (Resources(), [], "no nodes are registered"),
        (Resources(gpus=1, gpu_memory_gb=24), [node("node-a"), node("node-b")], "no node has a free GPU"),
        (Resources(gpus=1, gpu_memory_gb=24), [node("node-a", gpus=(8,)), node("node-b", gpus=(12, 16))],
         "needs 1 GPU with 24 GB; largest free: 16 GB on node-b"),
        (Resources(gpus=2, gpu_memory_gb=24), [node("node-a", gpus=(80, 10)), node("node-b", gpus=(20, 20))],
         "needs 2 GPUs with 24 GB; largest free: 20 GB on node-b"),
        (Resources(gpus=4), [node("node-a", gpus=(80, 80)), node("node-b", gpus=(8,))],
         "needs 4 GPUs; most free: 2 GPUs on node-a"),
        (Resources(cpu=4), [node("node-a", cpus=2), node("node-b", cpus=1.5)], "needs 4 CPUs; most free: 2 on node-a"),
        (Resources(cpu=1, memory_gb=64), [node("node-a", memory=12.5), node("node-b", memory=8)],
         "needs 64 GB of memory; most free: 12.5 GB on node-a"),
        (Resources(cpu=4, memory_gb=16), [node("node-a", cpus=8, memory=8), node("node-b", cpus=2, memory=32)],
         "no node has all of it free at once: needs 4 CPUs and 16 GB of memory"),
    ],
)
def test_it_says_what_was_asked_and_what_came_closest(request_, nodes, message):
    with pytest.raises(NoNodeFits) as refused:
        place(request_, nodes)
    assert str(refused.value) == message


def test_a_gpu_request_is_not_placed_on_a_node_whose_cpus_are_taken():
    nodes = [node("gpu-but-busy", "0.1", cpus=0.5, gpus=(80,)), node("gpu-free", "0.9", gpus=(80,))]
    assert place(Resources(gpus=1, gpu_memory_gb=40, cpu=2), nodes).node == "gpu-free"


def test_among_a_thousand_nodes_it_finds_the_cheapest_fit():
    rng = random.Random(9)
    nodes = [
        node(f"node-{index:04d}", f"{rng.uniform(0.5, 9):.2f}", cpus=rng.choice([0, 1, 2, 8]),
             memory=rng.choice([1, 4, 64]), gpus=tuple(rng.choice([8, 16, 24, 80]) for _ in range(rng.randint(0, 4))))
        for index in range(1000)
    ]
    request = Resources(gpus=2, gpu_memory_gb=24, cpu=2, memory_gb=4)
    fitting = [n for n in nodes if n.cpus_free >= 2 and n.memory_free_gb >= 4
               and sum(memory >= 24 for memory in n.gpus_free) >= 2]
    assert fitting, "the random fleet should hold some node that fits"
    cheapest = min(n.price_per_hour for n in fitting)
    placement = place(request, nodes)
    assert placement.price_per_hour == cheapest
    assert placement.node in {n.name for n in fitting if n.price_per_hour == cheapest}
