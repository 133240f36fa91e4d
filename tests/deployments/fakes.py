"""An in-memory runner with the real interface, for flow and reconciler tests that must
not depend on a template environment. Each launched run is a real HTTP server thread
answering its ready path, so the hub's readiness check is exercised for real."""

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from runners.base import Gpu, Inventory, LaunchSpec, NodeLost, NodeUnreachable, RunPhase, RunState


@dataclass
class FakeRun:
    spec: LaunchSpec
    phase: RunPhase = RunPhase.RUNNING
    exit_code: int | None = None
    server: ThreadingHTTPServer | None = None
    logs: list[str] = field(default_factory=list)

    @property
    def endpoint(self) -> str | None:
        return f"http://127.0.0.1:{self.server.server_address[1]}" if self.server else None


@dataclass
class FakeEngine:
    inventory: Inventory = field(default_factory=lambda: Inventory(cpus=8, memory_gb=32))
    answers: bool = True
    lost: str = ""  # set: the engine answers that the node is gone (a swarm node that left), in these words
    ready: bool = True
    exits_on_launch: int | None = None  # exit code of every run right after launch
    runs: dict[str, FakeRun] = field(default_factory=dict)
    launches: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def kill(self, handle: str, exit_code: int = 137) -> None:
        run = self.runs[handle]
        _shutdown(run)
        run.phase, run.exit_code = RunPhase.EXITED, exit_code
        run.logs.append(f"killed with {exit_code}")

    def orphan(self, handle: str) -> None:
        self.runs[handle] = FakeRun(spec=LaunchSpec(deployment=handle, image="fake://orphan"))

    def close(self) -> None:
        for run in self.runs.values():
            _shutdown(run)


ENGINES: dict[str, FakeEngine] = {}


def engine(url: str, **settings) -> FakeEngine:
    ENGINES[url] = FakeEngine(**settings)
    return ENGINES[url]


class FakeRunner:
    name = "fake"

    def __init__(self, base_url: str | None = None, address: str = "127.0.0.1"):
        self.engine = ENGINES[base_url]

    def _check(self) -> None:
        if not self.engine.answers:
            raise NodeUnreachable("connection refused")
        if self.engine.lost:
            raise NodeLost(self.engine.lost)

    def launch(self, spec: LaunchSpec) -> RunState:
        self._check()
        old = self.engine.runs.get(spec.deployment)
        if old is not None:
            _shutdown(old)
        run = FakeRun(spec=spec, logs=["setting up", f"listening for {spec.deployment}"])
        self.engine.launches.append(spec.deployment)
        if self.engine.exits_on_launch is not None:
            run.phase, run.exit_code = RunPhase.EXITED, self.engine.exits_on_launch
            run.logs.append("Traceback: model weights not found")
        else:
            run.server = _serve(spec.ready_path, self.engine)
        self.engine.runs[spec.deployment] = run
        return self.status(spec.deployment)

    def status(self, deployment: str) -> RunState:
        self._check()
        run = self.engine.runs.get(deployment)
        if run is None:
            return RunState(deployment=deployment, phase=RunPhase.MISSING)
        return RunState(deployment=deployment, phase=run.phase, endpoint=run.endpoint, exit_code=run.exit_code)

    def logs(self, deployment: str, *, tail: int = 200) -> str:
        self._check()
        run = self.engine.runs.get(deployment)
        return "\n".join(run.logs[-tail:]) if run else ""

    def stop(self, deployment: str) -> None:
        self._check()
        run = self.engine.runs.get(deployment)
        if run is not None:
            _shutdown(run)
            run.phase = RunPhase.STOPPED

    def remove(self, deployment: str) -> None:
        self._check()
        run = self.engine.runs.pop(deployment, None)
        if run is not None:
            _shutdown(run)
        self.engine.removed.append(deployment)

    def list(self) -> list[RunState]:
        self._check()
        return [self.status(handle) for handle in self.engine.runs]

    def inventory(self) -> Inventory:
        self._check()
        return self.engine.inventory


def gpus(count: int, memory_gb: float, model: str = "NVIDIA A100") -> tuple[Gpu, ...]:
    return tuple(Gpu(model=model, memory_gb=memory_gb) for _ in range(count))


def _serve(ready_path: str, engine: FakeEngine) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            ok = self.path == ready_path and engine.ready
            self.send_response(200 if ok else 503)
            self.end_headers()
            self.wfile.write(b'{"ready": true}' if ok else b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _shutdown(run: FakeRun) -> None:
    if run.server is not None:
        run.server.shutdown()
        run.server.server_close()
        run.server = None
