"""Upload throughput and the server's memory while it receives bundles.

Starts the hub as a real server process on a throw-away SQLite database and artifact
folder, then uploads bundles of 10 and 50 MiB (incompressible data, so the gzip is
as large as the payload) through the API, streaming them from disk. Prints MiB/s and
the server's peak resident memory (VmHWM) after each: the peak must not grow with
the bundle's size, because the body is streamed to a temporary file while hashed.

    python bench/upload.py [--sizes 10 50]
"""

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MANAGE = [sys.executable, str(ROOT / "manage.py")]
TOKEN_SCRIPT = """
from django.contrib.auth import get_user_model
from templates_catalog.models import ApiToken
from templates_catalog.services import api_token_create, publisher_create
owner = get_user_model().objects.create_user("bench")
publisher = publisher_create(slug="bench", name="Bench", owner=owner)
print(api_token_create(publisher=publisher, created_by=owner, name="bench", permission=ApiToken.Permission.PUBLISH).secret)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def make_bundle(folder: Path, size_mib: int, version: str) -> Path:
    from templates_catalog.bundles import bundle_pack

    template = folder / f"template-{size_mib}"
    template.mkdir()
    (template / "hub.yaml").write_text(
        "schema: hub/v1\nname: bench-weights\nversion: " + version + "\ntier: atomic\nkind: service\n"
        "title: Bench weights\nsummary: A template with large incompressible weights.\nlicense: MIT\n"
        "serve:\n  handler: handler:Model\n"
    )
    with open(template / "weights.bin", "wb") as handle:
        for _ in range(size_mib):
            handle.write(os.urandom(1024 * 1024))
    path = folder / f"bundle-{size_mib}.tar.gz"
    path.write_bytes(bundle_pack(template))
    return path


def upload(port: int, token: str, bundle: Path) -> tuple[int, float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    size = bundle.stat().st_size
    start = time.perf_counter()
    with open(bundle, "rb") as body:
        connection.request(
            "POST",
            "/api/v1/templates/bench-weights/versions/",
            body=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/gzip", "Content-Length": str(size)},
        )
        response = connection.getresponse()
        response.read()
    return response.status, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as scratch:
        env = {
            **os.environ,
            "DEBUG": "0",
            "SECRET_KEY": "bench-only-secret-key-not-for-production",
            "HUB_VAR_DIR": scratch,
            "DATABASE_URL": f"sqlite:///{scratch}/bench.sqlite3",
            "ALLOWED_HOSTS": "127.0.0.1",
            "UPLOAD_RATE": "1000/minute",
            "BUNDLE_MAX_BYTES": str(100 * 1024 * 1024),
        }
        os.environ.update(env)
        subprocess.run([*MANAGE, "migrate", "-v0"], env=env, check=True)
        token = subprocess.run([*MANAGE, "shell", "-c", TOKEN_SCRIPT], env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        bundles = [make_bundle(Path(scratch), size, f"1.0.{index}") for index, size in enumerate(args.sizes)]
        port = free_port()
        server = subprocess.Popen(
            [*MANAGE, "runserver", f"127.0.0.1:{port}", "--noreload", "--nothreading", "--insecure"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            _wait_for(port)
            print(f"server pid {server.pid}: peak memory at start {peak_rss_mib(server.pid):.1f} MiB")
            print(f"{'bundle MiB':>10}{'status':>8}{'seconds':>9}{'MiB/s':>8}{'peak MiB':>10}")
            for bundle in bundles:
                status, seconds = upload(port, token, bundle)
                mib = bundle.stat().st_size / (1024 * 1024)
                print(f"{mib:>10.1f}{status:>8}{seconds:>9.2f}{mib / seconds:>8.1f}{peak_rss_mib(server.pid):>10.1f}")
        finally:
            server.terminate()
            server.wait(timeout=10)


def _wait_for(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the hub did not start")


if __name__ == "__main__":
    main()
