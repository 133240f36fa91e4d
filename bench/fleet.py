"""The fleet: deployments placed and started across a real two-node Docker Swarm, and the
scheduler's decision time among 1,000 nodes, both through the hub's real code on a
throw-away test database (whatever DATABASE_URL points at).

(a) Swarm: two extra Docker Engines on this machine form a swarm (tests/swarm.py: node A
1 fake GPU at 0.50/hour, node B 2 at 1.20/hour, loopback addresses only, the machine's own
engine untouched) beside a local `docker-registry`. A 1-GPU echo template is built once on
this machine's engine and pushed to the registry; then each round deploys N copies at once
and times them through the real flow (bench/deploy.py's in-process worker: schedule, pin
to the cheapest node with a free GPU, create the swarm service, the node pulls the image by
digest, wait for the ready path) until every one runs, then deletes them. The first round
starts on nodes that have never seen the image (each pulls it from the registry); later
rounds find it there. N is at most 3: the swarm has 3 GPUs.

(b) Scheduler: bench/deploy.py's scheduler section (1,000 nodes, 10,000 running
deployments; the flow's scheduling step, DB included), run as it is.

    python bench/fleet.py [--deployments 3] [--rounds 2] [--skip-swarm] [--skip-scheduler]

Needs root, `dockerd`, `ip`, Debian's `docker-registry` and the base image
(BUILD_BASE_IMAGE, default hub-base:bookworm) on this machine's Docker Engine.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import pytest  # noqa: E402
from deploy import InProcessWorker, bench_scheduler, publish_folder, template_folder  # noqa: E402  (sets Django up)
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402

from deployments.models import Deployment  # noqa: E402
from deployments.nodes import node_add, node_drain  # noqa: E402
from deployments.services import deployment_create, deployment_delete  # noqa: E402
from hub_site.backends import build_backend  # noqa: E402
from hub_site.celery import freeze_startup_objects  # noqa: E402
from runners.swarm import HUB_NODE_LABEL, SwarmRunner  # noqa: E402
from templates_catalog import builds  # noqa: E402
from templates_catalog.services import publisher_create  # noqa: E402
from tests.swarm import registry_serving, two_node_swarm  # noqa: E402

State = Deployment.State
PRICES = {"a": "0.50", "b": "1.20"}
SWARM_GPUS = 3
ONE_GPU = {"gpus": 1, "gpu_memory_gb": 8, "cpu": 0.5, "memory_gb": 0.5}


# --- (a) the swarm ----------------------------------------------------------------------


def swarm_nodes_add(swarm) -> None:
    """One hub node per swarm node, priced by the label the operator set on it."""
    listed = {node.id: node for node in SwarmRunner(base_url=swarm.manager_url, node_id=swarm.node_ids["a"]).nodes()}
    for name, node_id in swarm.node_ids.items():
        node_add(name=f"swarm-{name}", runner="swarm", engine_url=swarm.manager_url, address="127.0.0.1",
                 price_per_hour=listed[node_id].price_per_hour, labels={HUB_NODE_LABEL: node_id})


def build_once(version, worker: InProcessWorker) -> None:
    started = time.perf_counter()
    build = builds.build_request(version=version)
    worker.wait_for_builds()
    build.refresh_from_db()
    if build.status != "succeeded":
        raise SystemExit(f"the build failed: {build.error}\n{build.log_tail()}")
    print(f"  built once in {time.perf_counter() - started:.1f} s, pushed as {build.image_reference}")


def deploy_round(version, owner, worker: InProcessWorker, count: int) -> float:
    """Deploy `count` copies at once; the seconds until every one runs. Deletes them after."""
    started = time.perf_counter()
    created = [deployment_create(owner=owner, version=version, inputs={}).deployment for _ in range(count)]
    worker.until_settled(created[0].pk)  # runs every deployment's due steps, interleaved
    seconds = time.perf_counter() - started
    settled = list(Deployment.objects.select_related("node").filter(pk__in=[d.pk for d in created]).order_by("pk"))
    for deployment in settled:
        if deployment.state != State.RUNNING:
            raise SystemExit(f"{deployment.handle} ended {deployment.state}: {deployment.reason}")
        print(f"    {deployment.handle} on {deployment.node.name}: {_placed_to_running(deployment):5.2f} s "
              f"from its placement to running")
    for deployment in settled:
        deployment_delete(deployment=deployment)
    worker.until_settled(settled[0].pk)
    return seconds


def _placed_to_running(deployment: Deployment) -> float:
    events = {event.to_state: event.at for event in deployment.events.all()}
    return (events[State.RUNNING] - events[State.STARTING]).total_seconds()


def bench_swarm(count: int, rounds: int) -> None:
    if not 1 <= count <= SWARM_GPUS:
        raise SystemExit(f"--deployments must be 1 to {SWARM_GPUS}: the bench swarm has {SWARM_GPUS} GPUs")
    settings.BUILD_BACKEND = "docker"
    settings.DEPLOY_READY_TIMEOUT_SECONDS = 120
    owner = get_user_model().objects.create_user(username="fleet-bench")
    worker = InProcessWorker()
    with (tempfile.TemporaryDirectory(prefix="hub-bench-fleet-") as scratch,
          registry_serving(Path(scratch)) as registry,
          two_node_swarm(PRICES) as swarm):
        settings.BUILD_REGISTRY = registry
        build_backend.cache_clear()
        swarm_nodes_add(swarm)
        folder = template_folder(Path(scratch), "fleet-echo", ONE_GPU)
        version = publish_folder(folder, publisher_create(slug="fleet-bench", name="Fleet bench"))
        print(f"swarm: 2 nodes (A 1 GPU at {PRICES['a']}/hour, B 2 GPUs at {PRICES['b']}/hour), registry {registry}, "
              f"{count} one-GPU deployments at once, {rounds} rounds ({connection.vendor})")
        build_once(version, worker)
        totals = []
        for number in range(1, rounds + 1):
            print(f"  round {number} ({'nodes pull the image' if number == 1 else 'image already on the nodes'}):")
            totals.append(deploy_round(version, owner, worker, count))
            print(f"    all {count} running {totals[-1]:.2f} s after the first deploy request")
        if len(totals) > 1:
            print(f"  place and start {count} deployments: cold {totals[0]:.2f} s, "
                  f"warm median {statistics.median(totals[1:]):.2f} s")
    for name in swarm.node_ids:  # the swarm is gone: the scheduler's section must not place there
        node_drain(name=f"swarm-{name}", enqueue=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deployments", type=int, default=SWARM_GPUS, help=f"deployed at once, 1 to {SWARM_GPUS}")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--running", type=int, default=10_000, help="running deployments on those nodes")
    parser.add_argument("--placements", type=int, default=200)
    parser.add_argument("--skip-swarm", action="store_true", help="only the scheduler")
    parser.add_argument("--skip-scheduler", action="store_true", help="only the swarm")
    args = parser.parse_args()
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    # What a Celery worker of the hub does once it has started (hub_site/celery.py).
    freeze_startup_objects()
    try:
        if not args.skip_swarm:
            try:
                bench_swarm(args.deployments, args.rounds)
            except pytest.skip.Exception as exc:  # tests/swarm.py's way of saying a tool is missing
                raise SystemExit(f"no swarm can be made here: {exc.msg}") from None
        if not args.skip_scheduler:
            bench_scheduler(args.nodes, args.running, args.placements)
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)


if __name__ == "__main__":
    main()
