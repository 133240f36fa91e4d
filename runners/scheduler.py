"""Placement: the cheapest node that fits a deployment; ties go to the emptiest.

A pure function of the request and each node's free capacity (its capacity minus what its
running deployments hold), computed by the caller. One pass over the nodes; when nothing
fits, a second pass finds the constraint that failed and the node that came closest, for a
message a person can act on.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from .base import Resources

# Capacities are summed floats (0.1 + 0.2 != 0.3): a request that fits exactly must fit.
_SLACK = 1e-9


@dataclass(frozen=True)
class NodeCapacity:
    name: str
    price_per_hour: Decimal
    cpus_free: float
    memory_free_gb: float
    gpus_free: tuple[float, ...] = ()  # memory in GB of each GPU that is free (one deployment holds whole GPUs)
    gpu_model: str = ""
    cpus_total: float = 0.0  # for "emptiest" tie-breaks and messages
    memory_total_gb: float = 0.0


@dataclass(frozen=True)
class Placement:
    node: str
    price_per_hour: Decimal


class NoNodeFits(Exception):
    """str(exc) is the person's message."""


def place(request: Resources, nodes: Sequence[NodeCapacity]) -> Placement:
    if not nodes:
        raise NoNodeFits("no nodes are registered")
    best: NodeCapacity | None = None
    best_rank: tuple | None = None
    for node in nodes:
        if not _fits(request, node):
            continue
        rank = (node.price_per_hour, -_emptiness(node), node.name)
        if best_rank is None or rank < best_rank:
            best, best_rank = node, rank
    if best is None:
        raise NoNodeFits(_why_nothing_fits(request, nodes))
    return Placement(node=best.name, price_per_hour=best.price_per_hour)


def _fits(request: Resources, node: NodeCapacity) -> bool:
    return (
        node.cpus_free + _SLACK >= request.cpu
        and node.memory_free_gb + _SLACK >= request.memory_gb
        and (request.gpus == 0 or _usable_gpus(request, node) >= request.gpus)
    )


def _usable_gpus(request: Resources, node: NodeCapacity) -> int:
    return sum(1 for memory in node.gpus_free if memory + _SLACK >= request.gpu_memory_gb)


def _emptiness(node: NodeCapacity) -> float:
    """The share of the node that is free (0 to 2: CPU share plus memory share)."""
    cpu_share = node.cpus_free / node.cpus_total if node.cpus_total else 0.0
    memory_share = node.memory_free_gb / node.memory_total_gb if node.memory_total_gb else 0.0
    return cpu_share + memory_share


def _why_nothing_fits(request: Resources, nodes: Sequence[NodeCapacity]) -> str:
    if request.gpus:
        gpu_reason = _gpu_shortfall(request, nodes)
        if gpu_reason:
            return gpu_reason
    most_cpus = max(nodes, key=lambda node: node.cpus_free)
    if most_cpus.cpus_free + _SLACK < request.cpu:
        return f"needs {_plural(request.cpu, 'CPU')}; most free: {_number(most_cpus.cpus_free)} on {most_cpus.name}"
    most_memory = max(nodes, key=lambda node: node.memory_free_gb)
    if most_memory.memory_free_gb + _SLACK < request.memory_gb:
        return (
            f"needs {_number(request.memory_gb)} GB of memory; "
            f"most free: {_number(most_memory.memory_free_gb)} GB on {most_memory.name}"
        )
    return f"no node has all of it free at once: needs {_describe(request)}"


def _gpu_shortfall(request: Resources, nodes: Sequence[NodeCapacity]) -> str | None:
    """The message when no node has enough free GPUs of enough memory, else None."""
    with_gpus = [node for node in nodes if node.gpus_free]
    if not with_gpus:
        return "no node has a free GPU"
    if any(_usable_gpus(request, node) >= request.gpus for node in with_gpus):
        return None
    wanted = _gpu_words(request)
    enough_count = [node for node in with_gpus if len(node.gpus_free) >= request.gpus]
    if not enough_count:
        most = max(with_gpus, key=lambda node: len(node.gpus_free))
        return f"needs {wanted}; most free: {_plural(len(most.gpus_free), 'GPU')} on {most.name}"
    # The node whose N-th largest free GPU is largest came closest to fitting.
    closest = max(enough_count, key=lambda node: _nth_largest(node.gpus_free, request.gpus))
    largest = _nth_largest(closest.gpus_free, request.gpus)
    return f"needs {wanted}; largest free: {_number(largest)} GB on {closest.name}"


def _nth_largest(values: tuple[float, ...], n: int) -> float:
    return sorted(values, reverse=True)[n - 1]


def _describe(request: Resources) -> str:
    parts = [_plural(request.cpu, "CPU"), f"{_number(request.memory_gb)} GB of memory"]
    if request.gpus:
        parts.append(_gpu_words(request))
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _gpu_words(request: Resources) -> str:
    count = _plural(request.gpus, "GPU")
    return f"{count} with {_number(request.gpu_memory_gb)} GB" if request.gpu_memory_gb else count


def _plural(amount: float, noun: str) -> str:
    return f"{_number(amount)} {noun}" + ("" if amount == 1 else "s")


def _number(value: float) -> str:
    """24.0 → "24", 0.5 → "0.5", 15.999999 → "16"."""
    return f"{round(float(value), 2):g}"
