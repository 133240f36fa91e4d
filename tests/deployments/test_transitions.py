"""The one transition function: its table, its event rows, its follow-ups, and proof
that nothing else writes a deployment's state."""

import re
from pathlib import Path

import pytest
from django.db import transaction

from deployments.models import Deployment, DeploymentEvent
from deployments.transitions import ALLOWED, TransitionRefused, deployment_open, deployment_transition

State = Deployment.State
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def deployment(version, node_factory):
    node = node_factory()
    return deployment_open(owner=version.template.publisher.members.get(), version=version, node=node)


def _put(deployment: Deployment, state: str) -> None:
    # Test set-up only: place the row in the state under test without the table's say-so.
    Deployment.objects.filter(pk=deployment.pk).update(state=state, reason="earlier failure" if state == "failed" else "")


MOVES = [(start, end) for start, ends in ALLOWED.items() for end in sorted(ends)]


@pytest.mark.parametrize(("start", "end"), MOVES, ids=[f"{a}->{b}" for a, b in MOVES])
def test_every_allowed_move_writes_the_state_and_one_event(deployment, start, end):
    _put(deployment, start)

    moved = deployment_transition(deployment_id=deployment.pk, to=end, message=f"to {end}")

    assert moved.state == end and Deployment.objects.get(pk=deployment.pk).state == end
    event = DeploymentEvent.objects.filter(deployment=deployment).last()
    assert (event.from_state, event.to_state, event.message) == (start, end, f"to {end}")


REFUSED = [(start, end) for start in ALLOWED for end in State.values if end not in ALLOWED[start] and end != start]


@pytest.mark.parametrize(("start", "end"), REFUSED, ids=[f"{a}->{b}" for a, b in REFUSED])
def test_every_other_move_is_refused_and_writes_nothing(deployment, start, end):
    _put(deployment, start)
    events = DeploymentEvent.objects.count()

    with pytest.raises(TransitionRefused, match=f"cannot go from {start} to {end}"):
        deployment_transition(deployment_id=deployment.pk, to=end, message="no")

    assert Deployment.objects.get(pk=deployment.pk).state == start
    assert DeploymentEvent.objects.count() == events


def test_moving_to_the_current_state_is_a_no_op(deployment):
    deployment_transition(deployment_id=deployment.pk, to=State.BUILDING, message="once")
    deployment_transition(deployment_id=deployment.pk, to=State.BUILDING, message="redelivered")

    assert list(DeploymentEvent.objects.filter(deployment=deployment).values_list("to_state", flat=True)) == [
        "pending", "building",
    ]


def test_a_stale_caller_is_refused(deployment):
    deployment_transition(deployment_id=deployment.pk, to=State.STOPPING, message="user stopped it")

    with pytest.raises(TransitionRefused, match="is stopping, not pending"):
        deployment_transition(deployment_id=deployment.pk, to=State.BUILDING, expect=(State.PENDING,))


def test_a_failure_needs_a_reason_and_records_it(deployment):
    with pytest.raises(ValueError):
        deployment_transition(deployment_id=deployment.pk, to=State.FAILED)

    failed = deployment_transition(deployment_id=deployment.pk, to=State.FAILED, message="no node has 4 GPUs")
    assert failed.reason == "no node has 4 GPUs" and failed.stopped_at is not None


def test_the_state_and_its_event_roll_back_together(deployment):
    with pytest.raises(RuntimeError), transaction.atomic():
        deployment_transition(deployment_id=deployment.pk, to=State.BUILDING, message="about to roll back")
        raise RuntimeError

    assert Deployment.objects.get(pk=deployment.pk).state == State.PENDING
    assert not DeploymentEvent.objects.filter(to_state=State.BUILDING).exists()


def test_follow_up_tasks_are_sent_only_after_commit_and_only_for_the_flows_states(
    deployment, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        deployment_transition(deployment_id=deployment.pk, to=State.BUILDING, message="")
        assert sent == []  # not before commit
    for callback in callbacks:
        callback()
    assert sent == [(deployment.pk, 0)]

    _put(deployment, State.STARTING)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        deployment_transition(deployment_id=deployment.pk, to=State.RUNNING, message="ready")
    assert callbacks == [] and len(sent) == 1  # running needs nothing from the flow


def test_a_failed_deployment_without_a_reason_cannot_be_stored(deployment):
    from django.db import IntegrityError

    with pytest.raises(IntegrityError), transaction.atomic():
        Deployment.objects.filter(pk=deployment.pk).update(state="failed", reason="")


ASSIGNMENT = re.compile(r"""(\.state\s*=[^=]|[(,\s]state\s*=|["']state["']\s*:)""")


def test_nothing_but_the_transition_function_writes_state():
    offenders = []
    for path in [*ROOT.glob("deployments/**/*.py"), *ROOT.glob("hub_site/*.py"), *ROOT.glob("templates_catalog/**/*.py")]:
        if "migrations" in path.parts or path.name in ("transitions.py", "job_transitions.py", "models.py"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if ASSIGNMENT.search(line) and not _a_read(line) and "Deployment" in path.read_text():
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def _a_read(line: str) -> bool:
    """`.filter(state=...)` and its kin look a state up; only update/create (and assignments) write it."""
    return any(read in line for read in (".filter(", ".exclude(", ".get(")) and not any(
        write in line for write in ("update(", "create(", "update_or_create("))


def test_the_state_check_tells_a_lookup_from_a_write():
    assert _a_read('running = Job.objects.filter(node__isnull=False, state=Job.State.RUNNING)')
    assert not _a_read('Deployment.objects.filter(pk=1).update(state="failed")')
    assert ASSIGNMENT.search('Deployment.objects.filter(pk=1).update(state="failed")')
