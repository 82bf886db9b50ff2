"""Load test of ``hopstack serve``: many concurrent clients on loopback, with and without micro-batching.

For each setting (``--max-batch 1``: every request is its own runner call; ``--max-batch 64``: dynamic
micro-batching) the script starts ``hopstack serve`` on the given pipelines as a subprocess, waits for
``/readyz``, warms the HTTP path with a few requests, then runs ``--clients`` concurrent clients (asyncio
+ aiohttp, one connection each; httpx's client tops out near 120 requests/s here) that post ``/v1/retrieve``
requests to one pipeline, cycling through MultiHop-RAG's questions, until ``--requests`` are done or
``--max-seconds`` have passed. It records every request's status and latency, reads the server's batch-size
histogram from ``/metrics``, then stops the server with SIGTERM (a graceful shutdown). With ``--ray-replicas
N ...`` it also serves the batched setting on a two-node Ray cluster started on 127.0.0.1 (one CPU a node;
``hopstack serve --ray ADDRESS --replicas N``, 0.75 CPU a replica), for each N.

    python benchmarks/serve_load.py --index runs/mhr-index --json benchmarks/results/serve_load.json

Prints a table (throughput, p50/p99 latency, errors, mean batch size, throughput ratio batched/unbatched)
and writes JSON. Client and server share this machine's cores, so the absolute numbers are the pair's;
the ratio is measured in the same run.
"""

import argparse
import asyncio
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp
import httpx
from results_file import write_results

from hopstack.datasets.benchmark import load_dataset
from hopstack.demo import SAMPLE_QUESTIONS
from hopstack.testing import LocalRayCluster, free_port, stop_process, wait_ready

REPO = Path(__file__).resolve().parent.parent


def questions(dataset: str | None) -> list[str]:
    """MultiHop-RAG's questions when the data is there, else the shipped sample's."""
    if dataset:
        return [q.question for q in load_dataset(dataset, "all", None).questions]
    from hopstack.datasets.questions import read_questions

    return [q.question for q in read_questions(SAMPLE_QUESTIONS)]


def start_server(
    files: list[Path], index: str, max_batch: int, max_wait_ms: float, extra: Sequence[str] = ()
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "hopstack", "serve", *map(str, files), "--index", index, "--port", str(port)]
    command += ["--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms), *extra]
    server = subprocess.Popen(command, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(httpx.Client(base_url=url), seconds=600)
    except (RuntimeError, TimeoutError):
        server.kill()
        raise
    return server, url


async def load(url: str, pipeline: str | None, texts: list[str], clients: int, total: int, max_seconds: float) -> dict:
    """``clients`` concurrent clients posting ``/v1/retrieve`` to ``pipeline`` (None: getting ``/healthz``, the
    HTTP floor) until ``total`` requests are done or time is up."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    issued = 0
    started = time.perf_counter()

    async def client(http: aiohttp.ClientSession) -> None:
        nonlocal issued
        while issued < total and time.perf_counter() - started < max_seconds:
            question = texts[issued % len(texts)]
            issued += 1
            sent = time.perf_counter()
            try:
                if pipeline is None:
                    request = http.get(f"{url}/healthz")
                else:
                    request = http.post(f"{url}/v1/retrieve", json={"question": question, "pipeline": pipeline})
                async with request as response:
                    await response.read()
                    key = str(response.status)
            except aiohttp.ClientError as exc:
                key = type(exc).__name__
            latencies.append(time.perf_counter() - sent)
            statuses[key] = statuses.get(key, 0) + 1

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "throughput_rps": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
        "errors": sum(n for key, n in statuses.items() if key != "200"),
        "statuses": statuses,
    }


def batch_sizes(url: str, pipeline: str) -> dict:
    """Mean and count of the server's runner calls for ``pipeline`` (from its Prometheus histogram)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    values = {}
    for name in ("sum", "count"):
        match = re.search(rf'hopstack_batch_size_{name}{{pipeline="{re.escape(pipeline)}"}} (\S+)', text)
        values[name] = float(match.group(1)) if match else 0.0
    return {"calls": int(values["count"]), "mean_batch": values["sum"] / values["count"] if values["count"] else 0.0}


def in_process(files: list[Path], index: str, texts: list[str], count: int, batch: int) -> dict[str, dict]:
    """Questions per second of each pipeline's retrieval in this process, no HTTP: one question a call, then
    ``batch`` a call (the same ``count`` questions, fresh ones for each way)."""
    from hopstack.serve import Query, ServedPipeline

    speeds = {}
    for path in files:
        served = ServedPipeline(path.stem, path, {"index": index})
        served.warm_up()
        served.retrieve([Query(q) for q in texts[:8]])
        single, batched = texts[8 : 8 + count], texts[8 + count : 8 + 2 * count]
        started = time.perf_counter()
        for question in single:
            served.retrieve([Query(question)])
        one = len(single) / (time.perf_counter() - started)
        started = time.perf_counter()
        for start in range(0, len(batched), batch):
            served.retrieve([Query(q) for q in batched[start : start + batch]])
        many = len(batched) / (time.perf_counter() - started)
        speeds[path.stem] = {"one_qps": one, "batched_qps": many, "ratio": many / one}
    return speeds


def measure(
    files: list[Path], args: argparse.Namespace, texts: list[str], max_batch: int, replicas: int | None = None
) -> list[dict]:
    """One server with ``--max-batch max_batch`` (on ``replicas`` Ray Serve replicas a pipeline, on the cluster at
    ``args.ray_address``, when given): a load run per pipeline (and the HTTP floor once, in process)."""
    on_ray = (
        ["--ray", args.ray_address, "--replicas", str(replicas), "--ray-cpus-per-actor", "0.75"] if replicas else []
    )
    server, url = start_server(files, args.index, max_batch, args.max_wait_ms, on_ray)
    rows = []
    try:
        targets = [path.stem for path in files] + ([None] if max_batch == 1 and replicas is None else [])
        for name in targets:
            for question in texts[:8]:  # the first requests of a pipeline pay for lazy initialisation
                httpx.post(f"{url}/v1/retrieve", json={"question": question, "pipeline": name}, timeout=120)
            before = batch_sizes(url, name or "")
            measured = asyncio.run(load(url, name, texts, args.clients, args.requests, args.max_seconds))
            after = batch_sizes(url, name or "")
            calls = after["calls"] - before["calls"]
            mean = (after["mean_batch"] * after["calls"] - before["mean_batch"] * before["calls"]) / max(calls, 1)
            label = name or "GET /healthz"
            rows.append(
                {"pipeline": label, "max_batch": max_batch, "ray_replicas": replicas, **measured}
                | {"runner_calls": calls, "mean_batch": mean}
            )
            where = f" on {replicas} Ray Serve replica(s)" if replicas else ""
            print(f"{label} max_batch={max_batch}{where}: {measured['throughput_rps']:.1f} req/s", flush=True)
    finally:
        code = stop_process(server, timeout_s=60)
    for row in rows:
        row["server_exit"] = code
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--index", required=True, help="index folder or corpus the pipelines retrieve from")
    parser.add_argument("--pipelines", nargs="+", default=["yaml/bm25.yaml", "yaml/hybrid.yaml"])
    parser.add_argument("--dataset", default="multihop-rag", help="questions to cycle through ('' = the sample)")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--requests", type=int, default=2000, help="requests per pipeline and setting")
    parser.add_argument("--max-seconds", type=float, default=300, help="time bound per pipeline and setting")
    parser.add_argument("--batched", type=int, default=64, help="--max-batch of the batched setting")
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--in-process", type=int, default=128, help="questions for the no-HTTP runner speeds")
    parser.add_argument(
        "--ray-replicas", type=int, nargs="*", default=[], help="also serve on a two-node local Ray cluster: replicas"
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ.setdefault("HOPSTACK_CACHE", "off")
    texts = questions(args.dataset or None)
    files = [REPO / p for p in args.pipelines]
    rows = measure(files, args, texts, 1) + measure(files, args, texts, args.batched)
    if args.ray_replicas:
        with LocalRayCluster(nodes=2, cpus_per_node=1) as cluster:
            args.ray_address = cluster.address
            for replicas in args.ray_replicas:
                rows += measure(files, args, texts, args.batched, replicas)
    runner = in_process(files, args.index, texts, args.in_process, args.batched)
    print()
    header = (
        f"{'pipeline':12} {'max_batch':>9} {'replicas':>8} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
    )
    print(header + f"{'errors':>6} {'mean batch':>10} {'x unbatched':>11}")
    for row in rows:
        base = next(r for r in rows if r["pipeline"] == row["pipeline"] and r["max_batch"] == 1)
        row["throughput_ratio"] = row["throughput_rps"] / base["throughput_rps"]
        replicas = f"{row['ray_replicas']} on Ray" if row["ray_replicas"] else "-"
        print(
            f"{row['pipeline']:12} {row['max_batch']:9d} {replicas:>8} {row['requests']:8d} "
            f"{row['throughput_rps']:8.1f} {row['p50_ms']:8.1f} {row['p99_ms']:8.1f} {row['errors']:6d} "
            f"{row['mean_batch']:10.1f} {row['throughput_ratio']:11.2f}"
        )
    print(f"\nin process, no HTTP ({args.in_process} questions each way): questions/s")
    for name, speed in runner.items():
        print(f"  {name:12} one a call {speed['one_qps']:8.1f}   {args.batched} a call {speed['batched_qps']:8.1f}"
              f"   x {speed['ratio']:.2f}")  # fmt: skip
    write_results(
        args.json,
        {
            "benchmark": "serve_load",
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "rows": rows,
            "in_process": runner,
        },
    )


if __name__ == "__main__":
    main()
