"""One place that turns a setting into a backend instance: a short name or the dotted
path of a class with the same interface (as Django's mail backends are chosen).

Constructing a backend may talk to an engine, so only workers call these; the web
process records the name it was asked for and leaves the rest to them."""

from functools import lru_cache
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from builders.backends import BuildBackend, DockerBackend, VenvBackend, docker_engine_answers
from builders.debs import DebCache
from runners.base import Runner

if TYPE_CHECKING:
    from deployments.models import Node

AUTO = "auto"
_BUILD_SETTINGS = {"BUILD_REGISTRY", "BUILD_NO_CACHE", "DEB_CACHE_DIR", "VAR_DIR"}


def build_backend_resolve(requested: str) -> str:
    """The concrete backend for a requested name: "auto" becomes "docker" when a Docker
    Engine answers, else "venv". Probes the engine, so call it in a worker only."""
    if requested != AUTO:
        return requested
    return "docker" if docker_engine_answers() else "venv"


@lru_cache(maxsize=8)
def build_backend(name: str) -> BuildBackend:
    """The build backend called `name`: "docker", "venv" or a dotted path (never "auto":
    resolve it first with `build_backend_resolve`)."""
    if name == "docker":
        return DockerBackend(
            registry=settings.BUILD_REGISTRY or None,
            no_cache=settings.BUILD_NO_CACHE,
            deb_cache=DebCache(settings.DEB_CACHE_DIR, max_megabytes=settings.BUILD_SYSTEM_PACKAGES_MAX_MB),
        )
    if name == "venv":
        return VenvBackend(settings.VAR_DIR / "venvs")
    if name == AUTO:
        raise ValueError('"auto" is not a backend: resolve it with build_backend_resolve() in the worker first')
    return import_string(name)()


@receiver(setting_changed)
def _forget_backends(*, setting: str, **kwargs) -> None:
    # Backends are built from settings: one built before a change would not see it.
    if setting in _BUILD_SETTINGS:
        build_backend.cache_clear()


# --- runners: a node row names its runner -------------------------------------------


def runner_for(node: "Node") -> Runner:
    """The runner of `node`: "process" (local processes of venv builds), "docker" (the
    node's Docker Engine), "kubernetes" (a namespace of a cluster, see runners/kubernetes.py),
    "swarm" (a swarm node, by the id in its `swarm_node_id` label, through the manager at its
    engine URL) or the dotted path of a class taking the same keywords."""
    if node.runner == "process":
        from runners.process import ProcessRunner

        return ProcessRunner(run_root=settings.VAR_DIR / "runs", venv_root=settings.VAR_DIR / "venvs", host=node.address)
    if node.runner == "docker":
        from runners.docker import DockerRunner

        return DockerRunner(base_url=node.engine_url or None, address=node.address, hub_id=settings.HUB_ID)
    if node.runner == "kubernetes":
        from runners.kubernetes import KubernetesRunner

        return KubernetesRunner(base_url=node.engine_url or None, address=node.address, hub_id=settings.HUB_ID)
    if node.runner == "swarm":
        from runners.swarm import HUB_NODE_LABEL, SwarmRunner

        return SwarmRunner(base_url=node.engine_url or None, address=node.address, hub_id=settings.HUB_ID,
                           node_id=node.labels.get(HUB_NODE_LABEL, ""))
    return import_string(node.runner)(base_url=node.engine_url or None, address=node.address)
