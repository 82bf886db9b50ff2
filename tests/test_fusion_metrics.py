"""Hybrid fusion methods, MultiHop-RAG's official retrieval metrics, and the metrics of every benchmark."""

import math
import random
from pathlib import Path

import pytest
from haystack import Document
from haystack.dataclasses import GeneratedAnswer

from hopstack.components.fusion import DocumentFusion
from hopstack.core.text import normalize_answer
from hopstack.datasets.benchmark import BenchmarkDataset, BenchmarkQuestion
from hopstack.experiments.metrics import (
    DOCUMENT_METRICS,
    answer_scores,
    document_metrics,
    mean_metrics,
    multihop_rag_query_metrics,
    score_run,
    source_ids,
)
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


# -- document, answer and context metrics for every benchmark ----------------------------------------
def _hand(ranked, gold):
    """Binary-relevance measures restated by hand, as a check on the ir-measures-derived values."""
    relevant = [d in gold for d in ranked[:10]]
    first = next((rank for rank, hit in enumerate(relevant, start=1) if hit), None)
    dcg = sum(1 / math.log2(rank + 1) for rank, hit in enumerate(relevant, start=1) if hit)
    ideal = sum(1 / math.log2(rank + 1) for rank in range(1, min(len(gold), 10) + 1))
    values = {
        "Recall@10": sum(relevant) / len(gold),
        "MRR@10": 1 / first if first else 0.0,
        "nDCG@10": dcg / ideal,
    }
    for k in (2, 5, 10):
        values[f"AllGold@{k}"] = float(set(gold) <= set(ranked[:k]))
        values[f"AnyGold@{k}"] = float(bool(set(gold) & set(ranked[:k])))
    return values


def test_document_metrics_equal_a_hand_computation_and_empty_runs_score_zero():
    rng = random.Random(11)
    pool = [f"d{i}" for i in range(15)]
    ranked, gold = [], []
    for _ in range(200):
        ranked.append(rng.sample(pool, rng.randint(0, 12)))
        gold.append(rng.sample(pool, rng.randint(1, 4)))
    ranked[3] = []  # nothing retrieved: every measure 0, and the questions after it stay aligned
    values = document_metrics(ranked, gold)
    assert set(values) == {
        *(f"{m}@{k}" for m in ("AllGold", "AnyGold") for k in (2, 5, 10)),
        "Recall@10",
        "MRR@10",
        "nDCG@10",
    }
    for i, (r, g) in enumerate(zip(ranked, gold)):
        expected = _hand(r, g) if r else dict.fromkeys(values, 0.0)
        assert {key: column[i] for key, column in values.items()} == pytest.approx(expected), (r, g)


def test_chunks_count_as_their_source_document_at_its_first_rank():
    chunks = [
        Document(id="a#0", meta={"doc_id": "a"}),
        Document(id="b#0", meta={"doc_id": "b"}),
        Document(id="a#1", meta={"doc_id": "a"}),
        Document(id="plain"),
    ]
    assert source_ids(chunks) == ["a", "b", "plain"]


def test_answer_scores_normalise_and_take_the_best_gold_answer():
    assert normalize_answer("The  Saltwhistle-River!") == "saltwhistleriver"
    assert normalize_answer("An apple, a pear and THE plum.") == "apple pear and plum"
    assert answer_scores("the Saltwhistle River", ["Saltwhistle River"]) == {"EM": 1.0, "F1": 1.0, "Acc": 1.0}
    scores = answer_scores("It is the Saltwhistle River, I think", ["Dunmarrow River", "Saltwhistle River"])
    assert scores["EM"] == 0.0 and scores["Acc"] == 1.0
    assert scores["F1"] == pytest.approx(2 * (2 / 6) / (2 / 6 + 1))  # 2 of 6 predicted tokens, both gold ones
    assert answer_scores("1848 or so", ["1848"])["Acc"] == 1.0 and answer_scores("18480", ["1848"])["Acc"] == 0.0
    assert answer_scores("", ["x"]) == answer_scores("the", ["x"]) == {"EM": 0.0, "F1": 0.0, "Acc": 0.0}


def test_yes_no_answers_get_no_partial_f1():
    assert answer_scores("no", ["yes"])["F1"] == 0.0
    assert answer_scores("yes it is", ["yes"])["F1"] == 0.0  # a yes/no gold needs exactly yes/no
    assert answer_scores("no", ["no way"])["F1"] == 0.0  # a yes/no prediction needs exactly that gold
    assert answer_scores("Yes.", ["yes"]) == {"EM": 1.0, "F1": 1.0, "Acc": 1.0}
    assert answer_scores("yes it is", ["yes"])["Acc"] == 1.0


def _question(qid, answers=(), gold_ids=("a",), facts=()):
    return BenchmarkQuestion(qid, f"question {qid}", list(answers), list(gold_ids), list(facts))


def _dataset(questions, format="generic"):
    return BenchmarkDataset("t", format, questions, Path("corpus.jsonl"), Path("questions.jsonl"))


def _docs(*ids, text="alpha beta"):
    return [Document(id=f"{i}#0", content=f"{text} {i}", meta={"doc_id": i}) for i in ids]


def test_score_run_scores_documents_answers_and_context_and_warns_of_empty_answers():
    questions = [_question("q1", ["Hollin Ford"], ["a", "b"]), _question("q2", ["yes"], ["c"]), _question("q3", ["x"])]
    reader_docs = _docs("z")
    outputs = [
        {
            "retriever": {"documents": _docs("a", "c", "b")},
            "answer": {"answers": [GeneratedAnswer("Hollin Ford", "q", reader_docs)]},
        },
        {"retriever": {"documents": _docs("c")}, "llm": {"replies": ["no"]}},
        {"retriever": {"documents": []}, "llm": {"replies": []}},
    ]
    scored = score_run(_dataset(questions), outputs)
    assert scored.question_ids == ["q1", "q2", "q3"]
    assert list(scored.means) == [*DOCUMENT_METRICS, "EM", "F1", "Acc", "context_tokens"]
    assert scored.per_query["AllGold@2"] == [0.0, 1.0, 0.0] and scored.per_query["AllGold@5"] == [1.0, 1.0, 0.0]
    assert scored.per_query["MRR@10"] == [1.0, 1.0, 0.0]
    assert scored.per_query["EM"] == [1.0, 0.0, 0.0] and scored.means["EM"] == pytest.approx(1 / 3)
    tokens = scored.per_query["context_tokens"]
    assert tokens[0] == tokens[1] > 0 and tokens[2] == 0.0  # q1 counts what the reader saw: one document
    assert scored.warnings == ["no answer (empty after normalisation), scored 0, for 1 question(s): q3"]


def test_score_run_multihop_rag_keeps_official_mrr_and_names_the_document_one_docmrr():
    facts = ["alpha beta b"]
    questions = [_question("q0000", ["B"], ["a", "b"], facts)]
    scored = score_run(_dataset(questions, "multihop-rag"), [{"bm25": {"documents": _docs("a", "b")}}])
    assert list(scored.means)[:4] == ["Hits@10", "Hits@4", "MAP@10", "MRR@10"]
    assert scored.means["MRR@10"] == 0.5 and scored.means["DocMRR@10"] == 1.0 and "EM" not in scored.means


def test_score_run_leaves_out_metrics_that_only_some_questions_can_have():
    questions = [_question("q1", ["x"], ["a"]), _question("q2", [], [])]
    outputs = [{"llm": {"replies": ["x"]}, "r": {"documents": _docs("a")}}] * 2
    scored = score_run(_dataset(questions), outputs)
    assert list(scored.means) == ["context_tokens"]
    assert scored.warnings == [
        "document metrics left out: no gold_ids for 1 question(s): q2",
        "answer metrics left out: no answers for 1 question(s): q2",
    ]
    with pytest.raises(ValueError, match="1 outputs for 2 questions"):
        score_run(_dataset(questions), outputs[:1])
