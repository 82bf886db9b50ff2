"""Trained rankers against hybrid retrieval on each dataset's test split (docs/methods/trained-reranker.md).

For every ``--dataset NAME=INDEX`` the script trains, unless it exists, a features-only LambdaRank ranker
``NAME-ranker`` on the dataset's train split (``hopstack train reranker --no-cross-encoder``, behind
yaml/hybrid.yaml), then compares yaml/hybrid.yaml with yaml/hybrid-learned.yaml using that ranker on the test
split: the benchmark's metrics, Fisher's randomization test against hybrid, and milliseconds a question.
``--ranker NAME=MODEL`` uses a model of your own for a dataset instead (trained elsewhere, e.g. on other
datasets for an out-of-domain run, or with a cross-encoder); ``--without-domain-check`` adds a bi-encoder
ranker's variant without its domain check, and counts the questions whose scorer the check trusts.
``--split all`` reads every question, for a dataset that no ranker in the run was trained or tuned on
(StrategyQA).

    python benchmarks/trained_rankers.py --dataset multihop-rag=runs/mhr-index \\
        --dataset scifact=runs/scifact-index --dataset 2wikimultihopqa=runs/2wikimultihopqa-index \\
        --json benchmarks/results/trained_rankers.json

Prints a table per dataset and writes JSON. Not a test: speed is never asserted in the test suite.
"""

import argparse
import os
import sys
from pathlib import Path

from results_file import variant_rows, write_results

from hopstack.components.learned_ranking import LearnedReranker, ranker_manifest
from hopstack.datasets.benchmark import load_dataset
from hopstack.experiments.compare import compare
from hopstack.experiments.variants import Grid
from hopstack.models.registry import is_trained_model
from hopstack.training.reranker import RerankerTraining, first_stage, train_reranker

REPO = Path(__file__).resolve().parent.parent
HYBRID = REPO / "yaml" / "hybrid.yaml"
LEARNED = REPO / "yaml" / "hybrid-learned.yaml"
METRICS = {
    "multihop-rag": ["MRR@10", "Hits@4", "Hits@10", "MAP@10", "AllGold@5"],
    "scifact": ["nDCG@10", "MRR@10", "Recall@10"],
    "2wikimultihopqa": ["AllGold@5", "AllGold@2", "AnyGold@5", "Recall@10"],
    "strategyqa": ["nDCG@10", "MRR@10", "Recall@10", "AllGold@5"],
}


def pairs(values: list[str], option: str) -> dict[str, str]:
    """``NAME=VALUE`` options as a dict."""
    found = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            sys.exit(f"{option} {value!r}: expected NAME=VALUE")
        found[name] = rest
    return found


def ranker_for(dataset: str, index: str, model: str | None) -> str:
    """The ranker to use for ``dataset``: ``model`` if given, else ``DATASET-ranker``, trained when missing."""
    if model:
        return model
    name = f"{dataset}-ranker"
    if not is_trained_model(name):
        config = RerankerTraining(dataset=dataset, index=index, out=name, negatives=str(HYBRID), cross_encoder=False)
        manifest = train_reranker(config, status=lambda message: print(f"  {message}", flush=True))
        print(f"  trained {name} in {manifest['seconds']} s")
    return name


def measure(
    dataset: str, index: str, ranker: str, limit: int | None, without_check: bool = False, split: str = "test"
) -> dict:
    """hybrid against hybrid + the ranker on ``split``: per variant its metrics, significance marks and ms a
    question; ``without_check`` adds the ranker with its domain check off (the second reads the scorer's
    embeddings from the call cache, so its ms a question are not its cost)."""
    parameters: dict[str, list] = {"rerank.model": [ranker]}
    if without_check:
        parameters["rerank.domain_check"] = [True, False]
    grid = Grid(path=Path("(benchmark)"), parameters=parameters)
    result = compare([HYBRID, LEARNED], dataset, index, grid=grid, limit=limit, split=split)
    measured = {"n_questions": result.n_questions, "split": split, "ranker": ranker, "rows": variant_rows(result)}
    if without_check and "domain" in ranker_manifest(ranker)[1]["ranker"]:
        measured["scorer_trusted"] = scorer_trusted(dataset, index, ranker, limit, split)
    return measured


def scorer_trusted(dataset: str, index: str, ranker: str, limit: int | None, split: str) -> int:
    """On how many questions of ``split`` the ranker's domain check trusts its scorer, over the candidates
    hybrid gives it (yaml/hybrid.yaml at depth 30, the first stage of yaml/hybrid-learned.yaml; the scorer's
    embeddings come from the call cache the comparison filled)."""
    data = load_dataset(dataset, split, limit)
    config = RerankerTraining(dataset=(dataset,), index=(index,), out="unused", negatives=str(HYBRID))
    ranked, _ = first_stage(config, index, data, data.questions, None)
    reranker = LearnedReranker(ranker)
    return int(reranker.scorer_trusted([r.question.question for r in ranked], [r.documents for r in ranked]).sum())


def print_table(dataset: str, measured: dict) -> None:
    metrics = METRICS.get(dataset) or sorted(next(iter(measured["rows"].values()))["metrics"] or {})
    print(f"\n{dataset} {measured['split']} split, n = {measured['n_questions']} (ranker {measured['ranker']})")
    if "scorer_trusted" in measured:
        print(f"the domain check trusts the scorer on {measured['scorer_trusted']} of {measured['n_questions']}")
    print(" | ".join(["variant", *metrics, "ms/question"]))
    for name, row in measured["rows"].items():
        if row["status"] != "ok":
            print(f"{name}: {row['status']} {row['error']}")
            continue
        marks = {m: "▲" if m in row["better"] else "▼" if m in row["worse"] else "" for m in metrics}
        values = [f"{row['metrics'].get(m, float('nan')):.3f}{marks[m]}" for m in metrics]
        print(" | ".join([name, *values, f"{row['ms_per_question']:.1f}"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", action="append", required=True, help="NAME=INDEX (repeatable)")
    parser.add_argument("--ranker", action="append", default=[], help="NAME=MODEL: use MODEL for dataset NAME")
    parser.add_argument("--limit", type=int, help="first N test questions of each dataset")
    parser.add_argument(
        "--without-domain-check", action="store_true", help="also run the ranker with its domain check off"
    )
    parser.add_argument(
        "--split",
        choices=["test", "all"],
        default="test",
        help="all: every question, for a dataset no ranker in the run was trained or tuned on",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    datasets, rankers = pairs(args.dataset, "--dataset"), pairs(args.ranker, "--ranker")
    if args.split == "all" and set(datasets) - set(rankers):
        sys.exit("--split all: give each dataset's --ranker (one trained on its train split would be tested on it)")
    report = {
        "cpu_count": os.cpu_count(),
        "python": sys.version,
        "limit": args.limit,
        "split": args.split,
        "datasets": {},
    }
    for dataset, index in datasets.items():
        print(f"{dataset}: index {index}", flush=True)
        ranker = ranker_for(dataset, index, rankers.get(dataset))
        measured = measure(dataset, index, ranker, args.limit, args.without_domain_check, args.split)
        report["datasets"][dataset] = measured
        print_table(dataset, measured)
        write_results(args.json, report)


if __name__ == "__main__":
    main()
