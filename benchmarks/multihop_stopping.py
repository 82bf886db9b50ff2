"""Iterative retrieval with natural-logic stopping against fixed hops: recall, hops, LLM calls, time.

Every variant of a grid file (default demos/multihop.yaml: BM25 alone, fixed hops and natural-logic
stopping at budgets of 2 and 3 hops) runs cold (call cache off) on the first ``--questions`` questions
of ``--dataset``, after its components are warmed up (not timed). Reported per variant: the dataset's
retrieval metrics (AllGold@k, AnyGold@k, MRR@10, ...; MultiHop-RAG's Hits@10 too), the hops used per
question (from the iterative retriever's trace) and how the loops ended, the local LLM's prompts and
seconds per question (:data:`hopstack.models.llm.USAGE`) and the pipeline's seconds per question.

The first stop decision, after hop 1, is checked against what hop 1 found: hop 1 retrieves for the
question itself, as the ``bm25`` variant does, so ``bm25``'s AllGold@5 per question says whether the 5
documents the stopper reads held every gold document. ``first_decision`` counts stopped / went on against
sufficient / not (on MultiHop-RAG, with its gold facts: AllGold@5 over the gold articles).
Variants run one after another in one process: nothing else should run on the machine meanwhile.

    python benchmarks/multihop_stopping.py --dataset multihop-rag --index runs/mhr-index --questions 10 \\
        --json benchmarks/results/multihop_stopping_mhr.json

Prints a table and writes JSON. Not a test: speed is never asserted in the test suite.
"""

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

from results_file import write_results
from variant_runs import run_variants

from hopstack.datasets.benchmark import load_dataset
from hopstack.experiments.metrics import score_run
from hopstack.experiments.variants import expand_variants, read_grid

REPO = Path(__file__).resolve().parent.parent
SHOWN = ("Hits@10", "AllGold@10", "AnyGold@10", "AllGold@5", "MRR@10", "Recall@10")


def loop_traces(outputs: list[dict]) -> list[dict]:
    """The iterative retriever's trace of each question (none for a pipeline without one)."""
    return [
        t
        for item in outputs
        for sockets in item.values()
        if isinstance(t := sockets.get("trace"), dict) and "hops" in t
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, help="dataset name or path (multihop-rag, 2wikimultihopqa, ...)")
    parser.add_argument("--index", required=True, help="the dataset's index folder")
    parser.add_argument("--grid", type=Path, default=REPO / "demos" / "multihop.yaml")
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--split", default="all", help="all, train or test (the first --questions of the split)")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ["HOPSTACK_CACHE"] = "off"  # measure the models, not the on-disk call cache

    dataset = load_dataset(args.dataset, args.split, args.questions)
    variants = [v for v in expand_variants([], read_grid(args.grid), {"index": args.index}) if v.data]
    rows = {}
    hop_one_sufficient: list[bool] | None = None
    n = len(dataset.questions)
    for run in run_variants(variants, dataset.questions, args.only):
        variant, result, wall, used = run.variant, run.result, run.seconds, run.llm_per_question
        scored = score_run(dataset, result.outputs)
        traces = loop_traces(result.outputs)
        if variant.name == "bm25":
            hop_one_sufficient = [value == 1.0 for value in scored.per_query["AllGold@5"]]
        rows[variant.name] = {
            "params": variant.params,
            "questions": n,
            "metrics": {k: v for k, v in scored.means.items() if k != "context_tokens"},
            "hops_per_question": sum(t["hops"] for t in traces) / n if traces else 1.0,
            "hops_histogram": dict(Counter(t["hops"] for t in traces)) if traces else {1: n},
            "stopped": dict(Counter(t["stopped"] for t in traces)),
            "first_decision": first_decisions(traces, hop_one_sufficient),
            "s_per_question": wall / n,
            **{f"llm_{name}_per_question": value for name, value in used.items()},
        }
        write_results(args.json, {"dataset": args.dataset, "split": args.split, "index": args.index,
                                  "grid": str(args.grid), "cpu_count": os.cpu_count(), "python": sys.version,
                                  "rows": rows})  # fmt: skip
        row = rows[variant.name]
        print(f"{variant.name}: {row['hops_per_question']:.2f} hops/q, {row['s_per_question']:.1f} s/q", flush=True)
    print_table(rows)


def first_decisions(traces: list[dict], sufficient: list[bool] | None) -> dict[str, int] | None:
    """Counts of the stopper's decision after hop 1 (stop / go on) against whether hop 1's documents held
    every gold document (``sufficient``, per question); None without a stopper decision or a bm25 row."""
    if sufficient is None or len(traces) != len(sufficient) or not all(t["stopper"] for t in traces):
        return None
    decided = Counter(
        f"{'stop' if t['hops'] == 1 and t['stopped'] == 'stopper' else 'go on'} | "
        f"{'sufficient' if enough else 'insufficient'}"
        for t, enough in zip(traces, sufficient)
    )
    return dict(sorted(decided.items()))


def print_table(rows: dict) -> None:
    """The rows as a Markdown table."""
    metrics = [m for m in SHOWN if any(m in row["metrics"] for row in rows.values())]
    print(f"\n| variant | {' | '.join(metrics)} | hops/q | LLM prompts/q | s/q |")
    print("| --- |" + " ---: |" * (len(metrics) + 3))
    for name, row in rows.items():
        values = " | ".join(f"{row['metrics'].get(m, float('nan')):.4f}" for m in metrics)
        print(
            f"| {name} | {values} | {row['hops_per_question']:.2f} | {row['llm_prompts_per_question']:.1f} | "
            f"{row['s_per_question']:.1f} |"
        )
    for name, row in rows.items():
        if row.get("first_decision"):
            print(f"{name}: decision after hop 1 against hop 1's sufficiency: {row['first_decision']}")


if __name__ == "__main__":
    main()
