"""Start a template through the harness as a real subprocess; for tests, benchmarks and local runs.

Standard library only, so the hub's own environment can drive a template that runs in
another interpreter (one that has torch, the model, and this harness's requirements):

    with serve_template(Path("fixtures/templates/minilm-embeddings"), python="var/template-env/bin/python") as server:
        status, body = server.post_json("/v1/embeddings", {"input": "hello"})
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# "runners.harness" in the repository, "harness" once copied into an image as a top-level package.
HARNESS_MODULE = __package__
HARNESS_PARENT = Path(__file__).resolve().parents[HARNESS_MODULE.count(".") + 1]


class TemplateFailedToStart(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class RunningTemplate:
    process: subprocess.Popen
    url: str
    log_path: Path

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def get_json(self, path: str, timeout: float = 60) -> tuple[int, object]:
        status, raw = self.request("GET", path, timeout=timeout)
        return status, _json_or_text(raw)

    def post_json(self, path: str, payload: object, method: str = "POST", timeout: float = 60) -> tuple[int, object]:
        body = json.dumps(payload).encode()
        status, raw = self.request(method, path, body, {"Content-Type": "application/json"}, timeout=timeout)
        return status, _json_or_text(raw)

    def delete(self, path: str, timeout: float = 60) -> tuple[int, object]:
        status, raw = self.request("DELETE", path, timeout=timeout)
        return status, _json_or_text(raw)

    def is_ready(self) -> bool:
        return self.get_json("/ready", timeout=5)[0] == 200

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def launch(template_dir: Path, *, python: str | Path = sys.executable, env: dict[str, str] | None = None,
           port: int | None = None, log_path: Path | None = None, extra_args: list[str] = ()) -> RunningTemplate:
    """Start the harness for `template_dir` without waiting for it; stdout and stderr go to `log_path`."""
    port = port or free_port()
    log_path = log_path or Path(tempfile.mkstemp(prefix=f"{template_dir.name}-", suffix=".log")[1])
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                 **(env or {})}
    child_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HARNESS_PARENT), child_env.get("PYTHONPATH")]))
    # -P: the caller's working directory never comes before the harness on the import path.
    command = [str(python), "-P", "-m", HARNESS_MODULE, "--template-dir", str(template_dir),
               "--host", "127.0.0.1", "--port", str(port), *extra_args]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=child_env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return RunningTemplate(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path)


def wait_until_ready(server: RunningTemplate, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise TemplateFailedToStart(f"exited with {server.process.returncode}:\n{server.output()[-4000:]}")
        with contextlib.suppress(OSError):
            if server.is_ready():
                return
        time.sleep(0.1)
    raise TemplateFailedToStart(f"not ready after {timeout:.0f}s:\n{server.output()[-4000:]}")


def stop(server: RunningTemplate, timeout: float = 20) -> int:
    """SIGTERM (graceful: the handler's close() runs), then SIGKILL if it hangs; returns the exit code.

    The signals go to the process group `launch` created, so worker processes a server
    spawned (LitServe does) end with it.
    """
    _signal_group(server.process, signal.SIGTERM)
    try:
        server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        _signal_group(server.process, signal.SIGKILL)
        server.process.wait()
    _signal_group(server.process, signal.SIGKILL)  # stragglers whose parent already exited
    return server.process.returncode


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


@contextlib.contextmanager
def serve_template(template_dir: Path, *, ready_timeout: float = 180, **launch_options) -> Iterator[RunningTemplate]:
    """Launch, wait for /ready, yield the running template, and always stop it afterwards."""
    server = launch(template_dir, **launch_options)
    try:
        wait_until_ready(server, ready_timeout)
        yield server
    finally:
        stop(server)


def _json_or_text(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
