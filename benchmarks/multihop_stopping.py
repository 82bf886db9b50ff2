"""Iterative retrieval with natural-logic stopping against fixed hops: recall, hops, LLM calls, time.

Every variant of a grid file (default demos/multihop.yaml: BM25 alone, fixed hops and natural-logic
stopping at budgets of 2 and 3 hops) runs cold (call cache off) on the first ``--questions`` questions
of ``--dataset``, after its components are warmed up (not timed). Reported per variant: the dataset's
retrieval metrics (AllGold@k, AnyGold@k, MRR@10, ...; MultiHop-RAG's Hits@10 too), the hops used per
question (from the iterative retriever's trace) and how the loops ended, the local LLM's prompts and
seconds per question (:data:`hopstack.models.llm.USAGE`), the pipeline's seconds per question and, per stop
decision, the seconds spent beyond the LLM (the prover's cost, retrieval included).

The first stop decision, after hop 1, is checked against what hop 1 found: hop 1 retrieves for the
question itself, as the ``bm25`` variant does, so ``bm25``'s AllGold@5 per question says whether the 5
documents the stopper reads held every gold document. ``first_decision`` counts stopped / went on against
sufficient / not (on MultiHop-RAG, with its gold facts: AllGold@5 over the gold articles).
Variants run one after another in one process: nothing else should run on the machine meanwhile.

Calibrating the stop threshold (``--nli-thresholds``, for stoppers whose prover reads an NLI operator model):
the proofs in the traces keep the model's probabilities, so the hop-1 decision is re-decided at each
threshold without a model call and reported as stops, stop precision and stop recall against hop 1's
sufficiency. The calibrated threshold is the lowest one whose stop precision reaches ``--target-precision``
over at least ``--min-stops`` stops, else the one of highest stop precision (reported as not reaching the
target). Run it on ``--split train`` only and write the value into the pipeline file; the test split then
measures it:

    python benchmarks/multihop_stopping.py --dataset 2wikimultihopqa --index runs/2wikimultihopqa-index \\
        --split train --questions 100 --grid demos/natlog-calibrate.yaml --nli-thresholds 0.5 0.6 0.7 0.8 0.9 0.95

    python benchmarks/multihop_stopping.py --dataset multihop-rag --index runs/mhr-index --questions 10 \\
        --json benchmarks/results/multihop_stopping_mhr.json

Prints a table and writes JSON. Not a test: speed is never asserted in the test suite.
"""

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

from results_file import write_results
from variant_runs import run_variants

from hopstack.components.stopping import decide_nli_operators, evidence_suffices
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
    parser.add_argument("--nli-thresholds", type=float, nargs="*", default=[], help="re-decide hop 1 at each")
    parser.add_argument("--target-precision", type=float, default=0.8)
    parser.add_argument("--min-stops", type=int, default=5)
    parser.add_argument("--traces", type=Path, default=None, help="write each question's loop trace here (JSONL)")
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
        if args.traces and traces:
            with args.traces.open("a", encoding="utf-8") as out:
                for i, (question, trace) in enumerate(zip(dataset.questions, traces)):
                    row = {"variant": variant.name, "id": question.id, "question": question.question, "trace": trace}
                    row["hop_one_sufficient"] = hop_one_sufficient[i] if hop_one_sufficient else None
                    out.write(json.dumps(row) + "\n")
        rows[variant.name] = {
            "params": variant.params,
            "questions": n,
            "metrics": {k: v for k, v in scored.means.items() if k != "context_tokens"},
            "hops_per_question": sum(t["hops"] for t in traces) / n if traces else 1.0,
            "hops_histogram": dict(Counter(t["hops"] for t in traces)) if traces else {1: n},
            "stopped": dict(Counter(t["stopped"] for t in traces)),
            "first_decision": first_decisions(traces, hop_one_sufficient),
            **calibration(traces, hop_one_sufficient, args.nli_thresholds, args.target_precision, args.min_stops),
            "s_per_question": wall / n,
            **{f"llm_{name}_per_question": value for name, value in used.items()},
        }
        decisions = sum(len(t["stopper"]) for t in traces) / n
        # what the stop decisions cost beyond the LLM (retrieval included): the prover's share of a hop
        rows[variant.name]["non_llm_s_per_decision"] = (wall / n - used["seconds"]) / decisions if decisions else None
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


def calibration(
    traces: list[dict], sufficient: list[bool] | None, thresholds: list[float], target: float, min_stops: int
) -> dict:
    """The hop-1 decisions re-decided from the traces' NLI proofs at each threshold, against hop 1's
    sufficiency, and the calibrated threshold: the lowest reaching ``target`` precision over at least
    ``min_stops`` stops, else (``target_reached`` false) the one of highest precision over at least
    ``min_stops`` stops (the lowest of equals; None when no threshold stops that often). Nothing for a
    variant whose hop-1 traces hold no NLI proof."""
    firsts = [t["stopper"][0] if t["stopper"] else None for t in traces]
    if not thresholds or sufficient is None or len(firsts) != len(sufficient) or not all(map(_nli_trace, firsts)):
        return {}
    sweep = {}
    for threshold in thresholds:
        for first in firsts:
            for proof in first.get("proofs") or [first["proof"]]:
                decide_nli_operators(proof, threshold)
        stops = [evidence_suffices(first) for first in firsts]
        hits = sum(stop and enough for stop, enough in zip(stops, sufficient))
        sweep[str(threshold)] = {
            "stops": sum(stops),
            "stop_precision": hits / sum(stops) if any(stops) else None,
            "stop_recall": hits / sum(sufficient) if any(sufficient) else None,
        }
    enough = {float(t): r["stop_precision"] for t, r in sweep.items() if r["stops"] >= min_stops}
    reached = [t for t, precision in enough.items() if precision >= target]
    best = max(enough, key=lambda t: (enough[t], -t), default=None)
    return {
        "hop_one_by_nli_threshold": sweep,
        "calibrated_nli_threshold": min(reached) if reached else best,
        "target_reached": bool(reached),
    }


def _nli_trace(trace: dict | None) -> bool:
    """Whether a stopper's trace holds natural-logic proofs decided by an NLI operator model."""
    proofs = (trace or {}).get("proofs") or [(trace or {}).get("proof")]
    return all(p and ("claim_nli" in p or any("nli" in step for step in p["steps"])) for p in proofs)


def print_table(rows: dict) -> None:
    """The rows as a Markdown table."""
    metrics = [m for m in SHOWN if any(m in row["metrics"] for row in rows.values())]
    print(f"\n| variant | {' | '.join(metrics)} | hops/q | LLM prompts/q | LLM s/q | s/q |")
    print("| --- |" + " ---: |" * (len(metrics) + 4))
    for name, row in rows.items():
        values = " | ".join(f"{row['metrics'].get(m, float('nan')):.4f}" for m in metrics)
        print(
            f"| {name} | {values} | {row['hops_per_question']:.2f} | {row['llm_prompts_per_question']:.1f} | "
            f"{row['llm_seconds_per_question']:.1f} | {row['s_per_question']:.1f} |"
        )
    for name, row in rows.items():
        if row.get("first_decision"):
            print(f"{name}: decision after hop 1 against hop 1's sufficiency: {row['first_decision']}")
        for threshold, result in row.get("hop_one_by_nli_threshold", {}).items():
            print(f"{name}: nli_threshold {threshold}: {result}")
        if row.get("non_llm_s_per_decision") is not None:
            print(f"{name}: {row['non_llm_s_per_decision']:.2f} s a stop decision beyond the LLM")
        if "calibrated_nli_threshold" in row:
            reached = "reaches" if row["target_reached"] else "does NOT reach"
            print(f"{name}: calibrated nli_threshold {row['calibrated_nli_threshold']} ({reached} the target)")


if __name__ == "__main__":
    main()
