"""Loaded with `-p tests.xdist_worker`, before Django's settings are read: each pytest-xdist
worker gets a Redis broker database of its own, so the real Celery workers that two test
modules start side by side never take each other's tasks (each runs on its own test
database). Test databases get their per-worker suffix from pytest-django itself. Each also
gets a hub name of its own (HUB_ID): a reconciler removes the runs of its name that its own
database does not know, and must not take another worker's (or a `make run` hub's) for those."""

import os
import re

worker = os.environ.get("PYTEST_XDIST_WORKER", "")
broker = os.environ.get("CELERY_BROKER_URL", "")
redis_database = re.match(r"^(?P<base>rediss?://[^/]*)(?:/(?P<number>\d+))?/?$", broker)
if worker.startswith("gw") and redis_database:
    # gw0 → the next database after the given one, gw1 → the one after that, ...
    number = int(redis_database["number"] or 0) + 1 + int(worker[2:])
    os.environ["CELERY_BROKER_URL"] = f"{redis_database['base']}/{number}"

os.environ.setdefault("HUB_ID", f"aihub-tests-{worker or 'main'}")
