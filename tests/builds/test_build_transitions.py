"""Builds have one transition function, as deployments do: a table of allowed moves, and
nothing else in the hub writes `Build.status`."""

import ast
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from templates_catalog.builds import (
    BuildTransitionRefused,
    build_request,
    build_transition,
    builds_fail_where,
    builds_reap_stale,
)
from templates_catalog.models import Build

ROOT = Path(__file__).resolve().parents[2]
Status = Build.Status
# (file, function) pairs allowed to write a build's status.
OWNERS = {("templates_catalog/builds.py", "build_transition"), ("templates_catalog/builds.py", "builds_fail_where")}
WRITING_CALLS = {"update", "create", "bulk_create", "get_or_create", "update_or_create", "Build"}


@pytest.fixture
def build(publish):
    return build_request(version=publish(name="built"))


def status_writes(source: str) -> list[tuple[int, str]]:
    """(line, enclosing function) of every write of a `status` attribute or field in `source`."""
    writes = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(target, ast.Attribute) and target.attr == "status" for target in targets):
            writes.append((node.lineno, function))
        if isinstance(node, ast.Call) and _call_name(node) in WRITING_CALLS:
            if any(keyword.arg == "status" for keyword in node.keywords):
                writes.append((node.lineno, function))
        if isinstance(node, ast.Call) and _call_name(node) == "setattr" and len(node.args) >= 2:
            name = node.args[1]
            if isinstance(name, ast.Constant) and name.value == "status":
                writes.append((node.lineno, function))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(ast.parse(source), "<module>")
    return writes


def _call_name(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def test_the_scan_catches_each_way_of_writing_a_status():
    source = (
        "def a(build):\n    build.status = 'failed'\n"
        "def b():\n    Build.objects.filter(pk=1).update(status='failed')\n"
        "def c():\n    Build.objects.create(version=v, status='running')\n"
        "def d(build):\n    setattr(build, 'status', 'failed')\n"
        "def e():\n    Build.objects.filter(status='queued').count()\n"
    )
    assert status_writes(source) == [(2, "a"), (4, "b"), (6, "c"), (8, "d")]


def test_nothing_but_the_transition_functions_writes_a_builds_status():
    offenders = []
    for path in [*ROOT.glob("templates_catalog/**/*.py"), *ROOT.glob("deployments/**/*.py"), *ROOT.glob("hub_site/*.py")]:
        relative = path.relative_to(ROOT).as_posix()
        if "migrations" in path.parts:
            continue
        for line, function in status_writes(path.read_text()):
            if (relative, function) not in OWNERS:
                offenders.append(f"{relative}:{line} in {function}()")
    assert offenders == []


def test_running_stamps_the_start_and_a_failure_the_end_and_duration(build):
    running = build_transition(build_id=build.pk, to=Status.RUNNING, attempts=1)
    assert running.status == Status.RUNNING and running.started_at is not None and running.finished_at is None

    failed = build_transition(build_id=build.pk, to=Status.FAILED, error="pip could not resolve numpy==9.9")
    stored = Build.objects.get(pk=build.pk)
    assert stored.status == Status.FAILED and stored.error == "pip could not resolve numpy==9.9"
    assert stored.finished_at >= stored.started_at and failed.duration_seconds >= 0


@pytest.mark.parametrize(
    "path",
    [
        (Status.SUCCEEDED,),  # queued → succeeded skips the build
        (Status.RUNNING, Status.SUCCEEDED, Status.RUNNING),  # a finished build never runs again
        (Status.FAILED, Status.SUCCEEDED),  # nor does a failed one turn into a success
        (Status.FAILED, Status.QUEUED),
    ],
)
def test_moves_outside_the_table_are_refused_and_change_nothing(build, path):
    *allowed, refused = path
    for to in allowed:
        fields = {"error": "reaped"} if to == Status.FAILED else {}
        if to == Status.SUCCEEDED:
            fields = {"image_reference": "aihub/built:1"}
        build_transition(build_id=build.pk, to=to, **fields)
    before = Build.objects.get(pk=build.pk)

    with pytest.raises(BuildTransitionRefused, match=f"cannot go from {before.status} to {refused}"):
        build_transition(build_id=build.pk, to=refused, image_reference="aihub/built:2")

    after = Build.objects.get(pk=build.pk)
    assert (after.status, after.image_reference) == (before.status, before.image_reference)


def test_a_failure_without_a_reason_is_refused(build):
    with pytest.raises(ValueError, match="needs an error"):
        build_transition(build_id=build.pk, to=Status.FAILED)
    assert Build.objects.get(pk=build.pk).status == Status.QUEUED


def test_the_bulk_failure_leaves_finished_builds_alone(publish, build):
    other = build_request(version=publish(name="finished"))
    build_transition(build_id=other.pk, to=Status.RUNNING)
    build_transition(build_id=other.pk, to=Status.SUCCEEDED, image_reference="aihub/finished:1")

    assert builds_fail_where(Build.objects.all(), reason="the hub is shutting down") == 1

    assert Build.objects.get(pk=build.pk).status == Status.FAILED
    assert Build.objects.get(pk=other.pk).status == Status.SUCCEEDED


def test_the_reaper_fails_only_stale_active_builds(publish, build, settings):
    settings.BUILD_TIMEOUT_SECONDS = 60
    fresh = build_request(version=publish(name="fresh"))
    Build.objects.filter(pk=build.pk).update(created_at=timezone.now() - timedelta(seconds=61))

    assert builds_reap_stale() == 1

    stale = Build.objects.get(pk=build.pk)
    assert stale.status == Status.FAILED and "did not finish within 60 seconds" in stale.error
    assert Build.objects.get(pk=fresh.pk).status == Status.QUEUED
