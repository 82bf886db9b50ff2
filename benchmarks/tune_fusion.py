"""Choose the hybrid fusion on MultiHop-RAG's dev split and report it on the test split.

BM25 and dense top-``depth`` lists are retrieved once for every query; each fusion setting (method,
BM25 weight, candidate depth) is then scored on the dev split (every fifth query), the best by MRR@10
is kept, and BM25, dense, a naive equal-weight RRF and the chosen fusion are reported on the test
split (the other four fifths), which played no part in the choice.

    python benchmarks/tune_fusion.py --index runs/mhr-index --json benchmarks/results/fusion_tuning.json
"""

import argparse
import itertools
import os
import sys
from pathlib import Path

from results_file import write_results

from hopstack.components.fusion import FUSION_METHODS, DocumentFusion
from hopstack.components.retrieval import BM25Retriever, DenseRetriever
from hopstack.datasets.multihop_rag import load_queries
from hopstack.datasets.registry import resolve_dataset
from hopstack.experiments.evaluation import split_items
from hopstack.experiments.metrics import mean_metrics, multihop_rag_query_metrics

# measure the models, not the on-disk call cache
os.environ["HOPSTACK_CACHE"] = "off"


def per_query(lists, queries) -> list[dict[str, float]]:
    return [multihop_rag_query_metrics([d.content for d in docs], q.facts) for docs, q in zip(lists, queries)]


def score(lists, queries) -> dict[str, float]:
    return mean_metrics(per_query(lists, queries))


def paired_comparison(a: list[dict[str, float]], b: list[dict[str, float]], metric: str = "MRR@10") -> dict:
    """Per-query wins, losses and a paired t-test of ``a`` against ``b`` (scipy)."""
    from scipy.stats import ttest_rel

    x, y = [m[metric] for m in a], [m[metric] for m in b]
    return {
        "metric": metric,
        "wins": sum(u > v for u, v in zip(x, y)),
        "losses": sum(u < v for u, v in zip(x, y)),
        "ties": sum(u == v for u, v in zip(x, y)),
        "paired_t_p_value": float(ttest_rel(x, y).pvalue),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--index", required=True, help="MultiHop-RAG index folder (hopstack index --dataset multihop-rag)"
    )
    parser.add_argument("--dataset", default="multihop-rag")
    parser.add_argument("--depth", type=int, default=100, help="candidates retrieved from each retriever")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    _, folder = resolve_dataset(args.dataset)
    queries = load_queries(folder)
    texts = [q.question for q in queries]
    print(f"retrieving top-{args.depth} from BM25 and dense for {len(queries)} queries ...", file=sys.stderr)
    sparse = BM25Retriever(index=args.index, top_k=args.depth).run_batch(query=texts)["documents"]
    dense = DenseRetriever(index=args.index, top_k=args.depth).run_batch(query=texts)["documents"]
    positions = list(range(len(queries)))
    dev, test = split_items(positions, "dev"), split_items(positions, "test")

    def fuse(method, weight, depth, subset):
        fusion = DocumentFusion(method=method, weights=[weight, 1 - weight], top_k=10)
        return [fusion.fuse([sparse[i][:depth], dense[i][:depth]]) for i in subset]

    grid = list(itertools.product(FUSION_METHODS, [0.5, 0.6, 0.7, 0.8, 0.9, 0.95], [10, 20, 50, 100]))
    grid = [(m, w, d) for m, w, d in grid if d <= args.depth]
    results = []
    for method, weight, depth in grid:
        metrics = score(fuse(method, weight, depth, dev), [queries[i] for i in dev])
        results.append({"method": method, "bm25_weight": weight, "depth": depth, "dev": metrics})
    best = max(results, key=lambda r: (r["dev"]["MRR@10"], r["dev"]["Hits@10"]))
    test_queries = [queries[i] for i in test]
    report = {
        "dataset": "multihop-rag",
        "n_dev": len(dev),
        "n_test": len(test),
        "chosen_on_dev": best,
        "test": {
            "bm25": score([sparse[i][:10] for i in test], test_queries),
            "dense": score([dense[i][:10] for i in test], test_queries),
            "rrf_equal_weights_depth20": score(fuse("rrf", 0.5, 20, test), test_queries),
            "chosen_fusion": score(fuse(best["method"], best["bm25_weight"], best["depth"], test), test_queries),
        },
        "chosen_vs_bm25_on_test": paired_comparison(
            per_query(fuse(best["method"], best["bm25_weight"], best["depth"], test), test_queries),
            per_query([sparse[i][:10] for i in test], test_queries),
        ),
        "grid_on_dev": results,
    }
    print(
        f"chosen on dev ({len(dev)} queries): {best['method']}, "
        f"BM25 weight {best['bm25_weight']}, depth {best['depth']}"
    )
    print(
        f"{'test split (' + str(len(test)) + ' queries)':<32} {'MRR@10':>7} {'MAP@10':>7} {'Hits@10':>8} {'Hits@4':>7}"
    )
    for name, m in report["test"].items():
        print(f"{name:<32} {m['MRR@10']:>7.4f} {m['MAP@10']:>7.4f} {m['Hits@10']:>8.4f} {m['Hits@4']:>7.4f}")
    comparison = report["chosen_vs_bm25_on_test"]
    print(
        f"chosen vs bm25 on test, per-query MRR@10: {comparison['wins']} wins, {comparison['losses']} losses, "
        f"{comparison['ties']} ties; paired t-test p = {comparison['paired_t_p_value']:.3g}"
    )
    write_results(args.json, report)


if __name__ == "__main__":
    main()
