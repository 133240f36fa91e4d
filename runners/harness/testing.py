"""Start a template through the harness as a real subprocess; for tests, benchmarks and local runs.

Standard library only (with `runners.process`, whose launching primitives it shares, from
the repository), so the hub's own environment can drive a template that runs in another
interpreter (one that has torch, the model, and this harness's requirements):

    with serve_template(Path("fixtures/templates/minilm-embeddings"), python="var/template-env/bin/python") as server:
        status, body = server.post_json("/v1/embeddings", {"input": "hello"})
"""

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runners.process import free_port, harness_command, harness_environment, start_in_own_group, stop_process_group

# "runners.harness" in the repository, "harness" once copied into an image as a top-level package.
HARNESS_MODULE = __package__
HARNESS_PARENT = Path(__file__).resolve().parents[HARNESS_MODULE.count(".") + 1]


class TemplateFailedToStart(RuntimeError):
    pass


__all__ = ["RunningTemplate", "TemplateFailedToStart", "free_port", "launch", "serve_template", "stop",
           "wait_until_ready"]


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
    command = harness_command(python, template_dir, host="127.0.0.1", port=port, module=HARNESS_MODULE,
                              extra_args=extra_args)
    child_env = harness_environment(os.environ, harness_parent=HARNESS_PARENT, extra=env)
    process = start_in_own_group(command, env=child_env, log_path=log_path)
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
    stop_process_group(server.process.pid, alive=lambda: server.process.poll() is None, grace=timeout)
    return server.process.wait()


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
