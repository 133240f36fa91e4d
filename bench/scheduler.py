"""The scheduler's time to place one deployment among 1,000 nodes holding 10,000 running ones.

    .venv/bin/python bench/scheduler.py [--nodes 1000] [--deployments 10000] [--rounds 200]

Synthetic fleet, fixed seed: nodes of a few shapes and prices, deployments spread over them
at random. Each round (a) turns the nodes' capacity and their deployments' holdings into
free capacity, as the hub does from its rows, and (b) places one GPU deployment. Prints p50
and p99 of (b) alone and of (a)+(b), and whether (a)+(b) meets the 50 ms target.
"""

import argparse
import random
import statistics
import sys
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from runners.base import Resources  # noqa: E402
from runners.scheduler import NodeCapacity, NoNodeFits, place  # noqa: E402

TARGET_MS = 50.0
SHAPES = [  # cpus, memory GB, GPU memory GB of each GPU, price per hour
    (16, 64, (), "0.40"),
    (32, 128, (24,) * 4, "2.10"),
    (64, 256, (80,) * 8, "9.80"),
    (8, 32, (16,), "0.90"),
]


def synthetic_fleet(nodes: int, deployments: int, rng: random.Random):
    fleet = []
    for index in range(nodes):
        cpus, memory, gpus, price = rng.choice(SHAPES)
        fleet.append((f"node-{index:04d}", cpus, memory, gpus, Decimal(price) + Decimal(rng.randint(0, 50)) / 100))
    holdings = []
    for _ in range(deployments):
        node = rng.randrange(nodes)
        gpu_count = rng.choice([0, 0, 0, 1]) if fleet[node][3] else 0
        holdings.append((node, rng.choice([0.5, 1, 2]), rng.choice([1, 2, 4]), gpu_count))
    return fleet, holdings


def free_capacity(fleet, holdings) -> list[NodeCapacity]:
    cpus_held, memory_held, gpus_held = defaultdict(float), defaultdict(float), defaultdict(int)
    for node, cpus, memory, gpu_count in holdings:
        cpus_held[node] += cpus
        memory_held[node] += memory
        gpus_held[node] += gpu_count
    return [
        NodeCapacity(name=name, price_per_hour=price, cpus_free=max(0.0, cpus - cpus_held[index]),
                     memory_free_gb=max(0.0, memory - memory_held[index]), gpus_free=gpus[gpus_held[index]:],
                     cpus_total=cpus, memory_total_gb=memory)
        for index, (name, cpus, memory, gpus, price) in enumerate(fleet)
    ]


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=200)
    args = parser.parse_args()

    fleet, holdings = synthetic_fleet(args.nodes, args.deployments, random.Random(9))
    request = Resources(gpus=1, gpu_memory_gb=24, cpu=2, memory_gb=8)
    place_ms, total_ms, placed = [], [], None
    for _ in range(args.rounds):
        started = time.perf_counter()
        nodes = free_capacity(fleet, holdings)
        aggregated = time.perf_counter()
        try:
            placed = place(request, nodes)
        except NoNodeFits as refused:
            placed = refused
        finished = time.perf_counter()
        place_ms.append((finished - aggregated) * 1000)
        total_ms.append((finished - started) * 1000)

    print(f"scheduler: {args.nodes} nodes, {args.deployments} running deployments, {args.rounds} rounds")
    print(f"  placed: {placed}")
    print(f"  place() alone:          p50 {percentile(place_ms, 0.5):7.2f} ms   p99 {percentile(place_ms, 0.99):7.2f} ms"
          f"   (mean {statistics.fmean(place_ms):.2f})")
    p99 = percentile(total_ms, 0.99)
    print(f"  free capacity + place:  p50 {percentile(total_ms, 0.5):7.2f} ms   p99 {p99:7.2f} ms")
    verdict = "meets" if p99 < TARGET_MS else "MISSES"
    print(f"  target: under {TARGET_MS:.0f} ms at p99: {verdict} it")


if __name__ == "__main__":
    main()
