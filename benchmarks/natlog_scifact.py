"""Do the natural-logic proofs mean something? The stopper's verdicts on SciFact claims against the gold labels.

SciFact (dev) claims come with the abstracts that support or contradict them, or, for NOT ENOUGH INFO
claims, with the abstracts they cite. For ``--per-label`` claims of each label (the first ones in file
order), the evidence is the sentences of those abstracts (blingfire-split; the prover keeps the 5 closest
to the claim) and :class:`hopstack.components.stopping.NaturalLogicProver` proves the claim. Reported: the
confusion matrix of verdicts against the gold labels (SUPPORT -> SUPPORTS, CONTRADICT -> REFUTES, no
evidence -> NOT ENOUGH INFO), accuracy, macro-F1, and the stopping decision as a classifier (stop =
SUPPORTS or REFUTES; it should stop exactly for the claims whose evidence decides them), with and without
content-free calibration of P(Yes) and at each ``--yes-thresholds`` value (the P(Yes) an operator question
needs); the LLM is asked once, the operators are re-decided from the proofs' P(Yes). With
``--operator-model NAME`` (a model ``hopstack train nli`` made) the operators are that NLI model's instead of
the LLM's, at each ``--nli-thresholds`` value (the prover's default, 0.5, is the one fixed beforehand; the
others are shown, not chosen on these claims). ``--alignment tokens`` aligns chunks to evidence spans by
pooled contextual token embeddings instead of one encoder pass per n-gram. Call cache off.

    python benchmarks/natlog_scifact.py --per-label 10 --json benchmarks/results/natlog_scifact.json
    python benchmarks/natlog_scifact.py --per-label 1000 --operator-model NAME \
        --json benchmarks/results/natlog_scifact_nli.json

Prints the tables and writes JSON. Not a test.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

from results_file import write_results

from hopstack.components.stopping import (
    NOT_ENOUGH_INFO,
    REFUTES,
    SUPPORTS,
    VERDICTS,
    NaturalLogicProver,
    decide_nli_operators,
    decide_operators,
)
from hopstack.core.text import split_sentences
from hopstack.datasets.registry import DATASETS, data_root
from hopstack.models.llm import USAGE

SCIFACT = data_root() / DATASETS["scifact"]
GOLD = {"SUPPORT": SUPPORTS, "CONTRADICT": REFUTES}


def load_claims(per_label: int) -> list[dict]:
    """The first ``per_label`` dev claims of each gold verdict, with their evidence abstracts' ids."""
    chosen: dict[str, list[dict]] = {v: [] for v in VERDICTS}
    for line in (SCIFACT / "claims_dev.jsonl").read_text(encoding="utf-8").splitlines():
        claim = json.loads(line)
        if claim["evidence"]:
            label = GOLD[next(iter(claim["evidence"].values()))[0]["label"]]
            documents = list(claim["evidence"])
        else:
            label, documents = NOT_ENOUGH_INFO, [str(d) for d in claim["cited_doc_ids"]]
        if len(chosen[label]) < per_label:
            chosen[label].append({"id": claim["id"], "claim": claim["claim"], "gold": label, "documents": documents})
    return [c for label in VERDICTS for c in chosen[label]]


def macro_f1(pairs: list[tuple[str, str]]) -> float:
    """Macro-averaged F1 over the three verdicts of (gold, predicted) pairs."""
    scores = []
    for label in VERDICTS:
        tp = sum(g == p == label for g, p in pairs)
        predicted = sum(p == label for _, p in pairs)
        actual = sum(g == label for g, _ in pairs)
        scores.append(2 * tp / (predicted + actual) if predicted + actual else 0.0)
    return sum(scores) / len(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-label", type=int, default=10)
    parser.add_argument("--llm", default="qwen2.5-0.5b")
    parser.add_argument("--yes-thresholds", type=float, nargs="+", default=[0.5, 0.55, 0.6, 0.65, 0.7])
    parser.add_argument("--operator-model", default=None, help="an NLI model name (hopstack train nli)")
    parser.add_argument("--nli-thresholds", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7, 0.8])
    parser.add_argument("--nli-level", choices=["chunk", "claim"], default="chunk", help="with --operator-model")
    parser.add_argument("--alignment", choices=["ngrams", "tokens"], default="ngrams")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    os.environ["HOPSTACK_CACHE"] = "off"

    claims = load_claims(args.per_label)
    wanted = {d for c in claims for d in c["documents"]}
    abstracts = {}
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            document = json.loads(line)
            if document["_id"] in wanted:
                abstracts[document["_id"]] = split_sentences(document["text"])
    prover = NaturalLogicProver(
        llm=args.llm,
        operator_model=args.operator_model,
        nli_level=args.nli_level,
        alignment=args.alignment,
        cache=False,
    )
    prover.warm_up()
    before = USAGE.snapshot()
    started = time.perf_counter()
    proofs = prover.prove(
        [c["claim"] for c in claims], [[s for d in c["documents"] for s in abstracts.get(d, [])] for c in claims]
    )
    seconds = time.perf_counter() - started
    report = {
        "claims": len(claims),
        "llm": None if args.operator_model else args.llm,
        "operator_model": args.operator_model,
        "nli_level": args.nli_level if args.operator_model else None,
        "alignment": args.alignment,
        "s_per_claim": seconds / len(claims),
        "llm_prompts_per_claim": (USAGE.snapshot()["prompts"] - before["prompts"]) / len(claims),
        "cpu_count": os.cpu_count(),
        "python": sys.version,
    }
    if args.operator_model:
        results = report.setdefault("by_nli_threshold", {})
        for threshold in args.nli_thresholds:  # the proofs keep every step's probabilities: no model call
            results[str(threshold)] = evaluate(claims, [decide_nli_operators(p, threshold) for p in proofs])
            setting = f"{args.operator_model}, {args.nli_level} level, nli_threshold {threshold}"
            print_evaluation(setting, results[str(threshold)])
        for proof in proofs:
            decide_nli_operators(proof, prover.nli_threshold)
    else:
        report["content_free_log_odds"] = prover.content_free_log_odds()
        for calibration, baseline in (("content-free", report["content_free_log_odds"]), ("none", None)):
            results = report.setdefault("by_calibration", {}).setdefault(calibration, {})
            for threshold in args.yes_thresholds:  # the proofs keep every P(Yes): re-deciding costs no LLM call
                results[str(threshold)] = evaluate(claims, [decide_operators(p, threshold, baseline) for p in proofs])
                print_evaluation(f"{calibration} calibration, yes_threshold {threshold}", results[str(threshold)])
        for proof in proofs:
            decide_operators(proof, prover.yes_threshold, proof["calibration"])
    report["proofs"] = [{"id": c["id"], "gold": c["gold"], **p} for c, p in zip(claims, proofs)]
    write_results(args.json, report)
    print(f"{report['s_per_claim']:.1f} s and {report['llm_prompts_per_claim']:.1f} LLM prompts per claim")


def evaluate(claims: list[dict], proofs: list[dict]) -> dict:
    """Verdicts against the gold labels, and the stop decision (SUPPORTS or REFUTES) as a classifier."""
    pairs = [(c["gold"], p["verdict"]) for c, p in zip(claims, proofs)]
    stop = [(g != NOT_ENOUGH_INFO, p != NOT_ENOUGH_INFO) for g, p in pairs]
    stopped = sum(p for _, p in stop)
    return {
        "accuracy": sum(g == p for g, p in pairs) / len(pairs),
        "macro_f1": macro_f1(pairs),
        "confusion": {g: {p: sum(pair == (g, p) for pair in pairs) for p in VERDICTS} for g in VERDICTS},
        "stopped": stopped,
        "stop_precision": sum(g and p for g, p in stop) / stopped if stopped else 0.0,
        "stop_recall": sum(g and p for g, p in stop) / max(1, sum(g for g, _ in stop)),
        "operators": {op: sum(p["operators"].count(op) for p in proofs) for op in "=<>!|#"},
        "not_asked": sum(p["operators"].count(None) for p in proofs),
    }


def print_evaluation(setting: str, result: dict) -> None:
    """One setting's results: accuracy, macro-F1, the confusion matrix, the stop decision."""
    print(f"\n{setting}: accuracy {result['accuracy']:.3f}, macro-F1 {result['macro_f1']:.3f}")
    print("| gold \\ verdict | " + " | ".join(VERDICTS) + " |\n| --- |" + " ---: |" * 3)
    for gold in VERDICTS:
        print(f"| {gold} | " + " | ".join(str(result["confusion"][gold][p]) for p in VERDICTS) + " |")
    print(
        f"stop precision {result['stop_precision']:.3f}, recall {result['stop_recall']:.3f} "
        f"({result['stopped']} stopped); operators {result['operators']}"
    )


if __name__ == "__main__":
    main()
