"""Requests held during a wake, through the real gateway: the memory that 1,000 (or --held)
HTTP requests to one sleeping deployment cost the process that serves the gateway (uvicorn,
as `make run` serves it), how many wakes they caused, whether every one got its answer, and
how soon after the deployment became running; on a throw-away test database (whatever
DATABASE_URL points at).

The requests come from a separate client process, each on its own connection with an
endpoint token, so only the gateway's side is measured here. The wake's flow is played by
this script (the transitions scheduling → starting → running after --wake-seconds, then an
endpoint that answers), so the figure is the gateway alone. Target: under 100 MiB more than
before the requests arrived.

    python bench/wake.py [--held 1000] [--wake-seconds 3]
"""

import argparse
import gc
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hub_site.settings")
os.environ.setdefault("SECRET_KEY", "bench-only-secret-key-not-for-production")

import django  # noqa: E402

django.setup()

import uvicorn  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402

from deployments import activity, transitions  # noqa: E402
from deployments.endpoint_tokens import endpoint_token_create  # noqa: E402
from deployments.gateway import DeploymentGateway  # noqa: E402
from deployments.models import Deployment, DeploymentEvent, Node  # noqa: E402
from deployments.wake import waiting_for  # noqa: E402
from templates_catalog.bundles import bundle_pack  # noqa: E402
from templates_catalog.services import publisher_create, template_version_publish  # noqa: E402
from tests.netutil import free_port  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from testdb import test_db_destroy  # noqa: E402

VECTOR_STORE = ROOT / "fixtures" / "templates" / "vector-store"
State = Deployment.State

# The client: `held` connections at once, each one request; prints each answer's status and
# the seconds from the start until it came.
CLIENT = r"""
import asyncio, json, sys, time
host, port, path, secret, held = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
request = (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {secret}\r\n"
           "Connection: close\r\n\r\n").encode()
async def one(started):
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    return int(answer.split(b" ", 2)[1]), time.monotonic() - started
async def main():
    started = time.monotonic()
    return await asyncio.gather(*(one(started) for _ in range(held)))
print(json.dumps(asyncio.run(main())))
"""


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def sleeping_deployment() -> tuple[Deployment, str]:
    owner = get_user_model().objects.create_user(username="bench", password="bench-only")
    publisher = publisher_create(slug="bench", name="Bench", owner=owner)
    version = template_version_publish(publisher=publisher, bundle=io.BytesIO(bundle_pack(VECTOR_STORE))).version
    node = Node.objects.create(name="bench-node", cpus=8, memory_gb=32)
    deployment = Deployment.objects.create(owner=owner, version=version, node=node)
    # Set-up only: a row already asleep, as the sleep beat task leaves it.
    Deployment.objects.filter(pk=deployment.pk).update(state=State.SLEEPING)
    secret = endpoint_token_create(deployment=deployment, created_by=owner, name="bench").secret
    return deployment, secret


def endpoint_that_answers() -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "11")
            self.end_headers()
            self.wfile.write(b'{"ok": true}'[:11])

        def log_message(self, *args):
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 4096  # the gateway forwards every held request at once
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def gateway_served(port: int) -> uvicorn.Server:
    config = uvicorn.Config(DeploymentGateway.from_settings(), host="127.0.0.1", port=port, loop="uvloop",
                            http="httptools", lifespan="on", log_level="warning", backlog=4096)
    server = uvicorn.Server(config)
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.02)
    return server


def play_the_flow(deployment: Deployment, after: float, endpoint: str, running_at: list[float]) -> None:
    """What the Celery worker does for a wake: place, start, and find it ready."""
    try:
        while Deployment.objects.get(pk=deployment.pk).state == State.SLEEPING:
            time.sleep(0.01)
        time.sleep(after)
        transitions.deployment_transition(deployment_id=deployment.pk, to=State.STARTING, message="placed")
        transitions.deployment_transition(deployment_id=deployment.pk, to=State.RUNNING, endpoint=endpoint, message="ready")
        running_at.append(time.monotonic())
    finally:
        connection.close()


def hold(port: int, deployment: Deployment, secret: str, held: int) -> tuple[list, float, int, float]:
    """Send the held requests from a client process; watch this process's memory meanwhile."""
    started = time.monotonic()
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, "127.0.0.1", str(port), f"/d/{deployment.handle}/ready", secret, str(held)],
        stdout=subprocess.PIPE, text=True,
    )
    peak_rss, peak_waiting = rss_mib(), 0
    while client.poll() is None:
        peak_rss = max(peak_rss, rss_mib())
        peak_waiting = max(peak_waiting, waiting_for(deployment.pk))
        time.sleep(0.05)
    answers = json.loads(client.stdout.read())
    return answers, peak_rss, peak_waiting, started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--held", type=int, default=1000)
    parser.add_argument("--wake-seconds", type=float, default=3.0)
    args = parser.parse_args()
    test_db = connection.creation.create_test_db(verbosity=0, autoclobber=True)
    transitions.send_progress = lambda deployment_id, countdown=0: None  # this script plays the worker
    try:
        deployment, secret = sleeping_deployment()
        upstream = endpoint_that_answers()
        port = free_port()
        gateway = gateway_served(port)
        running_at: list[float] = []
        endpoint = f"http://127.0.0.1:{upstream.server_address[1]}"
        flow = threading.Thread(target=play_the_flow, args=(deployment, args.wake_seconds, endpoint, running_at))
        flow.start()
        gc.collect()
        time.sleep(0.5)
        idle = rss_mib()
        answers, peak, peak_waiting, started = hold(port, deployment, secret, args.held)
        flow.join()
        gateway.should_exit = True
        wakes = DeploymentEvent.objects.filter(deployment=deployment, message="woken by a request").count()
        statuses = Counter(status for status, _ in answers)
        last = max(seconds for _, seconds in answers)
        print(f"held requests: {args.held} through the gateway (uvicorn, uvloop, httptools), answers by status: "
              f"{dict(statuses)}, wakes: {wakes}, waiting on one poller at once: {peak_waiting}")
        print(f"gateway process memory: idle {idle:.1f} MiB, peak while held {peak:.1f} MiB, "
              f"held cost {peak - idle:.1f} MiB (target < 100 MiB: {'PASS' if peak - idle < 100 else 'MISS'})")
        print(f"last answer {1000 * (started + last - running_at[0]):.0f} ms after the deployment became running "
              f"(the poller looks every 200 ms)")
    finally:
        activity.RECORDER.flush()  # now, while its test database still exists
        test_db_destroy(test_db)


if __name__ == "__main__":
    main()
