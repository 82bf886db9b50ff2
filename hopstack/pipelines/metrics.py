"""Retrieval metrics that follow the benchmarks' own protocols exactly (DESIGN decision 8)."""

from collections.abc import Sequence


def _squash(text: str) -> str:
    return text.replace(" ", "").replace("\n", "")


def multihop_rag_query_metrics(retrieved: Sequence[str], facts: Sequence[str]) -> dict[str, float]:
    """MultiHop-RAG's Hits@10, Hits@4, MAP@10 and MRR@10 for one query, as its ``retrieval_evaluate.py``
    computes them.

    ``retrieved`` are the ranked chunk texts, ``facts`` the query's evidence facts. A chunk is relevant
    when some fact (spaces and newlines removed) is a substring of it (spaces and newlines removed).
    At each relevant rank r <= 10 the precision term is (facts first found at r) / r; MAP@10 divides their
    sum by min(#facts, 10).
    """
    gold = [_squash(f) for f in facts]
    found: set[str] = set()
    precision_sum = 0.0
    first_relevant = None
    hits4 = hits10 = False
    for rank, text in enumerate(retrieved[:10], start=1):
        chunk = _squash(text)
        matched = [g for g in gold if g in chunk]
        if not matched:
            continue
        hits10 = True
        hits4 = hits4 or rank <= 4
        first_relevant = first_relevant or rank
        new = {g for g in matched if g not in found}
        # the official script counts each distinct fact string once, the first time it is found
        precision_sum += len(new) / rank
        found |= new
    return {
        "Hits@10": float(hits10),
        "Hits@4": float(hits4),
        "MAP@10": precision_sum / min(len(gold), 10) if gold else 0.0,
        "MRR@10": 1.0 / first_relevant if first_relevant else 0.0,
    }


def mean_metrics(per_query: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over queries."""
    if not per_query:
        return {}
    return {key: sum(m[key] for m in per_query) / len(per_query) for key in per_query[0]}
