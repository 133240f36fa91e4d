"""Settings and rows → backend instances: the one place that knows which class runs what."""

# --- runners: a node row names its runner -------------------------------------------

from typing import TYPE_CHECKING

from django.conf import settings
from django.utils.module_loading import import_string

from runners.base import Runner

if TYPE_CHECKING:
    from deployments.models import Node


def runner_for(node: "Node") -> Runner:
    """The runner of `node`: "process" (local processes of venv builds), "docker" (the
    node's Docker Engine) or the dotted path of a class taking the same keywords."""
    if node.runner == "process":
        from runners.process import ProcessRunner

        return ProcessRunner(run_root=settings.VAR_DIR / "runs", venv_root=settings.VAR_DIR / "venvs", host=node.address)
    if node.runner == "docker":
        from runners.docker import DockerRunner

        return DockerRunner(base_url=node.engine_url or None, address=node.address)
    return import_string(node.runner)(base_url=node.engine_url or None, address=node.address)
