"""What each reranker costs per question: LLM prompts, tokens and seconds, on MultiHop-RAG questions.

Every variant of a grid file (default demos/rerankers.yaml) runs cold (call cache and node cache off) on
``--questions`` MultiHop-RAG questions starting at ``--offset``, after its components are warmed up
(models and indexes loaded, not timed). The rerankers' trace outputs (prompt sources, parse failures and
fallbacks) are totalled over the questions. With ``--call-cache`` the call cache is on: prompts it already holds
cost nothing and are not counted, so use questions no run has seen (``--offset``); what is computed is stored
for later ``hopstack compare`` runs on the same questions. Reported per question: the pipeline's seconds, the reranking
stage's seconds (every node but the shared first stage: bm25, dense, fuse), and the local LLM's work from
:data:`hopstack.models.llm.USAGE` (prompts, prompt tokens, tokens actually evaluated after llama.cpp's
prefix reuse, generated tokens, seconds inside the model). Variants run one after another in one
process, so nothing else should run on the machine meanwhile.

    python benchmarks/reranker_cost.py --index runs/mhr-index --json benchmarks/results/reranker_cost.json

Prints a table and writes JSON. Not a test: speed is never asserted in the test suite.
"""

import argparse
import os
import sys
from pathlib import Path

from results_file import write_results
from variant_runs import run_variants

from hopstack.datasets.benchmark import load_dataset
from hopstack.experiments.variants import expand_variants, read_grid

REPO = Path(__file__).resolve().parent.parent
FIRST_STAGE = {"bm25", "dense", "fuse"}


def trace_totals(outputs: list[dict]) -> dict[str, float]:
    """Totals over the questions of the rerankers' per-question trace outputs (``rebel``, ``grouprank``,
    ``setwise``): numbers summed, text values counted as ``key=value``."""
    totals: dict[str, float] = {}
    for sockets in (s for item in outputs for node, s in item.items() if node not in FIRST_STAGE):
        for value in sockets.values():
            for key, field in value.items() if isinstance(value, dict) else ():
                if isinstance(field, bool | int | float):
                    totals[key] = totals.get(key, 0) + field
                elif isinstance(field, str):
                    totals[f"{key}={field}"] = totals.get(f"{key}={field}", 0) + 1
    return totals


def report(args: argparse.Namespace, rows: dict) -> dict:
    """The JSON report of the rows measured so far."""
    return {
        "index": args.index,
        "grid": str(args.grid),
        "offset": args.offset,
        "call_cache": args.call_cache,
        "cpu_count": os.cpu_count(),
        "python": sys.version,
        "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="a MultiHop-RAG index folder (hopstack index --dataset)")
    parser.add_argument("--grid", type=Path, default=REPO / "demos" / "rerankers.yaml")
    parser.add_argument("--questions", type=int, default=2)
    parser.add_argument("--offset", type=int, default=0, help="skip this many questions first")
    parser.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    parser.add_argument("--call-cache", action="store_true", help="keep the call cache on (see above)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if not args.call_cache:
        os.environ["HOPSTACK_CACHE"] = "off"  # measure the models, not the on-disk call cache

    questions = load_dataset("multihop-rag", "all", args.offset + args.questions).questions[args.offset :]
    variants = [v for v in expand_variants([], read_grid(args.grid), {"index": args.index}) if v.data]
    rows = {}
    for run in run_variants(variants, questions, args.only):
        variant, result, wall, used = run.variant, run.result, run.seconds, run.llm_per_question
        rerank_s = sum(s.wall_s for name, s in result.stats.items() if name not in FIRST_STAGE)
        rows[variant.name] = {
            "params": variant.params,
            "questions": len(questions),
            "s_per_question": wall / len(questions),
            "rerank_s_per_question": rerank_s / len(questions),
            **{f"llm_{name}_per_question": value for name, value in used.items()},
            "trace_totals": trace_totals(result.outputs),
        }
        row = rows[variant.name]
        write_results(args.json, report(args, rows))  # after every variant: an interrupted run keeps its rows
        print(
            f"{variant.name}: {row['rerank_s_per_question']:.1f} s/q rerank, {used['prompts']:.1f} prompts/q, "
            f"{used['prompt_tokens']:.0f} prompt tokens/q ({used['evaluated_tokens']:.0f} evaluated), "
            f"{used['generated_tokens']:.0f} generated",
            flush=True,
        )
    print_table(rows)


def print_table(rows: dict) -> None:
    """The rows as a Markdown table."""
    print("\n| variant | s/question (rerank) | LLM prompts/q | prompt tokens/q | evaluated/q | generated/q |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, row in rows.items():
        print(
            f"| {name} | {row['rerank_s_per_question']:.1f} | {row['llm_prompts_per_question']:.1f} | "
            f"{row['llm_prompt_tokens_per_question']:.0f} | {row['llm_evaluated_tokens_per_question']:.0f} | "
            f"{row['llm_generated_tokens_per_question']:.0f} |"
        )


if __name__ == "__main__":
    main()
