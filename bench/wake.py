"""Requests held during a wake: the memory that 1,000 (or --held) requests waiting in one
process for one sleeping deployment cost, how many wakes they caused, and how soon after the
deployment became running they all had their answer; through the hub's real
`deployment_wait_awake` on a throw-away test database (whatever DATABASE_URL points at).

The wake's flow is played by this script (the transitions scheduling → starting → running
after --wake-seconds), so the figure is the gateway side alone: the held requests and their
one shared poller. Target: under 100 MiB more than before the requests arrived.

    python bench/wake.py [--held 1000] [--wake-seconds 3]
"""

import argparse
import asyncio
import gc
import io
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_site.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-production")

import django  # noqa: E402

django.setup()

from asgiref.sync import sync_to_async  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, connections  # noqa: E402

from deployments import transitions  # noqa: E402
from deployments.models import Deployment, DeploymentEvent, Node  # noqa: E402
from deployments.wake import Awake, deployment_wait_awake, waiting_for  # noqa: E402
from templates_catalog.bundles import bundle_pack  # noqa: E402
from templates_catalog.services import publisher_create, template_version_publish  # noqa: E402

VECTOR_STORE = ROOT / "fixtures" / "templates" / "vector-store"

State = Deployment.State


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def sleeping_deployment() -> Deployment:
    owner = get_user_model().objects.create_user(username="bench", password="bench-only")
    publisher = publisher_create(slug="bench", name="Bench", owner=owner)
    version = template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(VECTOR_STORE))).version
    node = Node.objects.create(name="bench-node", cpus=8, memory_gb=32)
    deployment = Deployment.objects.create(owner=owner, version=version, node=node)
    # Set-up only: a row already asleep, as the sleep beat task leaves it.
    Deployment.objects.filter(pk=deployment.pk).update(state=State.SLEEPING)
    return deployment


def play_the_flow(deployment: Deployment, after: float, running_at: list[float]) -> None:
    """What the Celery worker does for a wake: place, start, and find it ready."""
    try:
        while Deployment.objects.get(pk=deployment.pk).state == State.SLEEPING:
            time.sleep(0.01)
        time.sleep(after)
        transitions.deployment_transition(deployment_id=deployment.pk, to=State.STARTING, message="placed")
        transitions.deployment_transition(deployment_id=deployment.pk, to=State.RUNNING, endpoint="http://127.0.0.1:9",
                                          message="ready")
        running_at.append(time.monotonic())
    finally:
        connection.close()


async def hold(deployment: Deployment, held: int) -> tuple[list, float, int]:
    tasks = [asyncio.ensure_future(deployment_wait_awake(deployment_id=deployment.pk, timeout=120)) for _ in range(held)]
    peak_waiting = 0
    peak_rss = rss_mib()
    while not all(task.done() for task in tasks):
        peak_waiting = max(peak_waiting, waiting_for(deployment.pk))
        peak_rss = max(peak_rss, rss_mib())
        await asyncio.sleep(0.05)
    answers = [task.result() for task in tasks]
    return answers, peak_rss, peak_waiting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--wake-seconds", type=float, default=3.0)
    args = parser.parse_args()
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    transitions.send_progress = lambda deployment_id, countdown=0: None  # this script plays the worker
    try:
        deployment = sleeping_deployment()
        running_at: list[float] = []
        flow = threading.Thread(target=play_the_flow, args=(deployment, args.wake_seconds, running_at))
        flow.start()
        gc.collect()
        idle = rss_mib()
        answers, peak, peak_waiting = asyncio.run(hold(deployment, args.held))
        answered = time.monotonic()
        flow.join()
        asyncio.run(sync_to_async(connections.close_all)())
        wakes = DeploymentEvent.objects.filter(deployment=deployment, message="woken by a request").count()
        awake = sum(isinstance(answer, Awake) for answer in answers)
        print(f"held requests: {args.held}, answered Awake: {awake}, wakes: {wakes}, "
              f"waiting on one poller at once: {peak_waiting}")
        print(f"memory: idle {idle:.1f} MiB, peak while held {peak:.1f} MiB, "
              f"held cost {peak - idle:.1f} MiB (target < 100 MiB)")
        print(f"last answer {1000 * (answered - running_at[0]):.0f} ms after the deployment became running "
              f"(polling every 200 ms; the measuring loop looks every 50 ms)")
    finally:
        connection.creation.destroy_test_db(test_db, verbosity=0)


if __name__ == "__main__":
    main()
