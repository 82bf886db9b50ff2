"""Hybrid fusion methods, and MultiHop-RAG's official retrieval metrics."""

import random

import pytest
from haystack import Document

from hopstack.components.fusion import DocumentFusion
from hopstack.pipelines.metrics import mean_metrics, multihop_rag_query_metrics
from hopstack.testing import assert_run_batch_matches_run


def docs(*pairs):
    return [Document(id=i, content=f"text {i}", score=s) for i, s in pairs]


SPARSE = docs(("a", 12.0), ("b", 6.0), ("c", 3.0))
DENSE = docs(("c", 0.9), ("d", 0.8), ("a", 0.5))


def fused(method, **kwargs):
    result = DocumentFusion(method=method, **kwargs).run(documents=[SPARSE, DENSE])["documents"]
    return {d.id: round(d.score, 6) for d in result}, [d.id for d in result]


def test_rrf():
    scores, order = fused("rrf", rrf_k=60)
    assert scores["a"] == round(1 / 61 + 1 / 63, 6) and scores["c"] == round(1 / 63 + 1 / 61, 6)
    assert scores["b"] == round(1 / 62, 6) and scores["d"] == round(1 / 62, 6)
    assert order[:2] == ["a", "c"]  # tie kept in first-seen order


def test_minmax_weighted_sum_and_missing_documents_get_the_floor():
    scores, order = fused("minmax", weights=[0.7, 0.3])
    # sparse: a=1, b=1/3, c=0; dense: c=1, d=0.75, a=0; d is missing from sparse, b from dense (floor 0)
    assert scores == {"a": 0.7, "b": round(0.7 / 3, 6), "c": 0.3, "d": 0.225}
    assert order == ["a", "c", "b", "d"]


def test_zscore_and_dbsf():
    z, _ = fused("zscore")
    # sparse z-scores: mean 7, sd sqrt(14); b missing from dense gets dense's lowest z-score
    sd = (14.0) ** 0.5
    dense_sd = ((0.9 - 0.7333333) ** 2 + (0.8 - 0.7333333) ** 2 + (0.5 - 0.7333333) ** 2) / 3
    dense_low = (0.5 - 0.7333333) / dense_sd**0.5
    assert z["b"] == pytest.approx((6 - 7) / sd + dense_low, abs=1e-5)
    d, order = fused("dbsf")
    assert all(0 <= v <= 2 for v in d.values()) and order[0] in ("a", "c")


def test_fusion_batch_matches_single_and_checks_weights():
    inputs = [{"documents": [SPARSE, DENSE], "top_k": k} for k in (1, 2, None)]
    assert_run_batch_matches_run(DocumentFusion(method="minmax", weights=[0.6, 0.4]), inputs)
    with pytest.raises(ValueError, match="2 weights for 3 ranked lists"):
        DocumentFusion(weights=[1, 1]).run(documents=[SPARSE, DENSE, SPARSE])
    with pytest.raises(ValueError, match="method must be one of"):
        DocumentFusion(method="borda")


def _official(retrieved, gold):
    """The official script's computation, restated as a test oracle."""
    gold = [g.replace(" ", "").replace("\n", "") for g in gold]
    retrieved = [r.replace(" ", "").replace("\n", "") for r in retrieved]
    hits10 = hits4 = False
    ap, first, found = 0.0, None, []
    for rank, item in enumerate(retrieved[:11], start=1):
        if any(g in item for g in gold) and rank <= 10:
            hits10 = True
            first = first or rank
            hits4 = hits4 or rank <= 4
            count = 0
            for g in gold:
                if g in item and g not in found:
                    count += 1
                    found.append(g)
            ap += count / rank
    return {"Hits@10": hits10, "Hits@4": hits4, "MAP@10": ap / min(len(gold), 10), "MRR@10": 1 / first if first else 0}


def test_multihop_rag_metrics_follow_the_official_script_on_random_cases():
    rng = random.Random(7)
    facts_pool = ["The cat sat.", "A dog\nbarked loudly", "Prices rose 3%", "He won the final", "Rain fell"]
    for _ in range(300):
        facts = rng.sample(facts_pool, rng.randint(1, 4)) + (["The cat sat."] if rng.random() < 0.2 else [])
        retrieved = []
        for _ in range(rng.randint(0, 12)):
            parts = rng.sample(facts_pool, rng.randint(0, 2))
            retrieved.append(" filler ".join(p.replace(" ", rng.choice([" ", "  ", "\n"])) for p in parts) or "none")
        ours = multihop_rag_query_metrics(retrieved, facts)
        reference = _official(retrieved, facts)
        assert ours == pytest.approx({k: float(v) for k, v in reference.items()}), (retrieved, facts)


def test_mean_metrics():
    assert mean_metrics([{"MRR@10": 1.0}, {"MRR@10": 0.5}]) == {"MRR@10": 0.75}
    assert mean_metrics([]) == {}
