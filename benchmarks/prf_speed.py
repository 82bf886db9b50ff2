"""What pseudo-relevance feedback costs per question, on MultiHop-RAG's queries over an index folder.

Pipelines of yaml/, each under hopstack's runner on the same index: bm25 against bm25-rm3, dense against
dense-prf (Average PRF, k = 3) and dense-prf with Rocchio (k = 5, [0.4, 0.6]), hybrid against hybrid-prf,
all over every query; text-prf (MiniLM bi-encoder scorer over BM25's top 20) with fb_docs 3 and with
fb_docs 0 (the same scorer without feedback) over the first ``--text-sample`` queries. Components are
warmed up (models and indexes loaded) before timing; each timing is the fastest of ``--repeats``
interleaved rounds, so the ratios hold on a shared, noisy machine; the call cache is off, so every round
embeds its queries.

    python benchmarks/prf_speed.py --index runs/mhr-index --json benchmarks/results/prf_speed.json

Prints a table and writes JSON. Not a test: speed is never asserted in the test suite.
"""

import argparse
import gc
import os
import sys
import time
from pathlib import Path

from results_file import write_results

from hopstack.datasets.multihop_rag import load_queries
from hopstack.datasets.registry import resolve_dataset
from hopstack.graphs import BatchRunner
from hopstack.spec.loading import load_pipeline

# measure the models, not the on-disk call cache
os.environ["HOPSTACK_CACHE"] = "off"

YAML = Path(__file__).resolve().parent.parent / "yaml"
ROCCHIO = {"fb_docs": 5, "rocchio_weights": [0.4, 0.6]}
PIPELINES = {
    "bm25": ("bm25", {}),
    "bm25-rm3": ("bm25-rm3", {}),
    "dense": ("dense", {}),
    "dense-prf (average, k=3)": ("dense-prf", {}),
    "dense-prf (rocchio, k=5, 0.4/0.6)": ("dense-prf", ROCCHIO),
    "hybrid": ("hybrid", {}),
    "hybrid-prf": ("hybrid-prf", {}),
}
TEXT_PIPELINES = {
    "text-prf, fb_docs=0 (bi-encoder rerank)": ("text-prf", {"fb_docs": 0}),
    "text-prf, fb_docs=3": ("text-prf", {}),
}


def warmed_runner(name: str, overrides: dict) -> BatchRunner:
    pipeline = load_pipeline(YAML / f"{name}.yaml", overrides)
    pipeline.warm_up()
    return BatchRunner(pipeline)


def timed_rounds(runners: dict[str, tuple[BatchRunner, list[dict]]], repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` interleaved rounds of each runner over its inputs, in seconds."""
    best = {name: float("inf") for name in runners}
    for _ in range(repeats):
        for name, (runner, inputs) in runners.items():
            gc.collect()
            started = time.perf_counter()
            runner.run(inputs)
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="a MultiHop-RAG index folder (hopstack index --dataset)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--text-sample", type=int, default=100)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    _, folder = resolve_dataset("multihop-rag")
    queries = [q.question for q in load_queries(folder)]
    runners = {}
    for label, (name, overrides) in {**PIPELINES, **TEXT_PIPELINES}.items():
        runner = warmed_runner(name, {"index": args.index, "device": "cpu", **overrides})
        sample = queries[: args.text_sample] if label in TEXT_PIPELINES else queries
        runners[label] = (runner, [runner.question_input(q) for q in sample])
    seconds = timed_rounds(runners, args.repeats)
    rows = {
        label: {"questions": len(runners[label][1]), "ms_per_question": 1000 * s / len(runners[label][1])}
        for label, s in seconds.items()
    }
    print("| pipeline | questions | ms/question |\n| --- | ---: | ---: |")
    for label, row in rows.items():
        print(f"| {label} | {row['questions']} | {row['ms_per_question']:.2f} |")
    write_results(
        args.json,
        {
            "index": args.index,
            "repeats": args.repeats,
            "cpu_count": os.cpu_count(),
            "python": sys.version,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
