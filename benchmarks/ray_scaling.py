"""``--ray`` on this machine: the same index build and the same evaluation in one process and on Ray clusters of
one and two nodes (docs/concepts/scale-out.md).

Each Ray setting starts a real cluster on 127.0.0.1 (``hopstack.testing.LocalRayCluster``: one ``ray start``
process a node), then measures what Ray itself costs (the cluster's start-up, the driver's connection, an actor
method's round trip, moving an array between nodes' object stores) and what ``--ray`` costs end to end: an index
build (chunking and MiniLM embedding on Ray Data actors) of the first ``--documents`` MultiHop-RAG articles, and
an evaluation (BM25 top 20 reranked by the shipped learned reranker, about 0.25 s a question on one core) of
``--questions`` MultiHop-RAG test questions in shards on Ray actors. Every setting must give the one-process
run's metrics and index (checked, reported as ``same_results``). The call cache is off, so no setting reuses
another's model calls.

    python benchmarks/ray_scaling.py --json benchmarks/results/ray_scaling.json

On 2 cores expect overhead, not speed-up: the settings share the same two cores; what the table shows is what
Ray adds per task, per byte and at start-up, which the written plan for many nodes (docs) builds on.
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
from results_file import write_results

from hopstack.core.ray_cluster import RaySettings, connect
from hopstack.datasets.benchmark import dataset_corpus
from hopstack.experiments.evaluation import evaluate
from hopstack.index.store import build_index
from hopstack.testing import LocalRayCluster

PIPELINE = """
metadata: {hopstack: {inputs: [query], description: BM25 top 20 reranked by the shipped learned reranker}}
components:
  bm25: {type: hopstack.components.retrieval.BM25Retriever, init_parameters: {top_k: 20}}
  rerank:
    type: hopstack.components.learned_ranking.LearnedReranker
    init_parameters: {model: hopstack-reranker, top_k: 10, device: cpu}
connections: [{sender: bm25.documents, receiver: rerank.documents}]
"""
SETTINGS = [(1, 1, 1), (1, 2, 2), (2, 1, 2)]  # (nodes, CPUs a node, actors)


class Echo:
    """An actor that answers at once: its round trip is Ray's per-call overhead."""

    def ping(self, value: int) -> int:
        return value


def ray_overheads(ray, calls: int = 200, megabytes: int = 64) -> dict[str, float]:
    """An actor method's mean round trip (ms) and the rate (MB/s) at which an array put by the driver reaches a
    task on the last node and its result comes back."""
    actor = ray.remote(num_cpus=0)(Echo).remote()
    ray.get(actor.ping.remote(0))
    started = time.perf_counter()
    for i in range(calls):
        ray.get(actor.ping.remote(i))
    round_trip_ms = 1000 * (time.perf_counter() - started) / calls
    ray.kill(actor)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    last_node = [n["NodeID"] for n in ray.nodes() if n["Alive"]][-1]
    total = ray.remote(num_cpus=0)(lambda array: float(array.sum()))
    array = np.ones(megabytes * 1_000_000 // 8)
    started = time.perf_counter()
    ray.get(total.options(scheduling_strategy=NodeAffinitySchedulingStrategy(last_node, soft=False)).remote(array))
    return {"actor_call_ms": round_trip_ms, "transfer_mb_per_s": megabytes / (time.perf_counter() - started)}


def run_setting(corpus: Path, index: Path, pipeline: Path, questions: int, out: Path, ray: RaySettings | None):
    """Build the corpus's index and evaluate the pipeline; returns seconds, the manifest and the metrics."""
    started = time.perf_counter()
    manifest = build_index(corpus, out, ray=ray)
    index_s = time.perf_counter() - started
    started = time.perf_counter()
    result = evaluate(pipeline, "multihop-rag", index, questions, "test", ray=ray)
    eval_s = time.perf_counter() - started
    return {
        "index_s": index_s,
        "index_stage_s": manifest["stage_seconds"],
        "chunks": manifest["counts"]["chunks"],
        "eval_s": eval_s,
        "eval_warm_up_s": result["timings"]["warm_up_s"],
        "eval_run_s": result["timings"]["run_s"],
        "manifest": manifest,
        "metrics": result["metrics"],
    }


def same_index(a: dict, b: dict, folder_a: Path, folder_b: Path) -> bool:
    files = [f for f in a["files"] if not f.startswith("dense/")]
    vectors = [np.load(folder / "dense" / "embeddings.npy") for folder in (folder_a, folder_b)]
    return all(a["files"][f] == b["files"][f] for f in files) and float(np.abs(vectors[0] - vectors[1]).max()) <= 1e-5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--documents", type=int, default=150, help="MultiHop-RAG articles to index")
    parser.add_argument("--questions", type=int, default=60, help="MultiHop-RAG test questions to evaluate")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    os.environ["HOPSTACK_CACHE"] = "off"  # no setting may reuse the model calls of another (the workers get it too)

    work = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    corpus = work / "corpus.json"
    articles = json.loads(dataset_corpus("multihop-rag").read_text(encoding="utf-8"))[: args.documents]
    corpus.write_text(json.dumps(articles), encoding="utf-8")
    pipeline = work / "bm25-rerank.yaml"
    pipeline.write_text(textwrap.dedent(PIPELINE), encoding="utf-8")
    index = work / "mhr-bm25"
    build_index(dataset_corpus("multihop-rag"), index, dense=None)

    rows = {"1 process": run_setting(corpus, index, pipeline, args.questions, work / "single", None)}
    for nodes, cpus, actors in SETTINGS:
        name = f"Ray {nodes} node(s) x {cpus} CPU, {actors} actor(s)"
        started = time.perf_counter()
        with LocalRayCluster(nodes=nodes, cpus_per_node=cpus) as cluster:
            start_s = time.perf_counter() - started
            started = time.perf_counter()
            ray = connect(cluster.address)
            connect_s = time.perf_counter() - started
            overheads = ray_overheads(ray)
            folder = work / name.replace(" ", "_")
            row = run_setting(corpus, index, pipeline, args.questions, folder, RaySettings(cluster.address, actors))
        row.update(start_s=start_s, connect_s=connect_s, **overheads)
        row["same_results"] = row["metrics"] == rows["1 process"]["metrics"] and same_index(
            row["manifest"], rows["1 process"]["manifest"], folder, work / "single"
        )
        rows[name] = row

    base = rows["1 process"]
    print(f"{args.documents} articles indexed ({base['chunks']} chunks), {args.questions} questions evaluated")
    header = "setting                                  start s  call ms   MB/s  index s  x1proc  eval s  x1proc  same"
    print(header)
    for name, row in rows.items():
        ray_cells = (
            f"{row['start_s']:7.1f}  {row['actor_call_ms']:7.2f}  {row['transfer_mb_per_s']:5.0f}"
            if "start_s" in row
            else f"{'-':>7}  {'-':>7}  {'-':>5}"
        )
        print(
            f"{name:<40} {ray_cells}  {row['index_s']:7.1f}  {row['index_s'] / base['index_s']:6.2f}"
            f"  {row['eval_s']:6.1f}  {row['eval_s'] / base['eval_s']:6.2f}  {row.get('same_results', '-')}"
        )
    for row in rows.values():
        row.pop("manifest")
    write_results(
        args.json,
        {
            "benchmark": "ray_scaling",
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "documents": args.documents,
            "questions": args.questions,
            "chunks_per_s_1_process": base["chunks"] / base["index_stage_s"]["embedding"],
            "actor_call_ms_median": statistics.median(r["actor_call_ms"] for r in rows.values() if "start_s" in r),
            "results": rows,
        },
    )


if __name__ == "__main__":
    main()
