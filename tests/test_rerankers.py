"""Rerankers and the scorers behind them: ordering, ties, batching, the graded scorer's expectation, and
the real MiniLM and SmolLM2 models."""

import numpy as np
import pytest

from conftest import YAML_DIR, TableScorer
from hopstack.components.rerankers import PointwiseReranker
from hopstack.models.scorers import BiEncoderScorer, LLMGradedScorer, LLMScorer, expected_grades, make_scorer
from hopstack.pipelines.loading import load_pipeline_data
from hopstack.testing import assert_run_batch_matches_run

TINY_LLM = {"backend": "llama.cpp", "model": "smollm2-135m", "n_ctx": 512}
PAIRS = [
    ("What is the capital of France?", "Paris is the capital and largest city of France."),
    ("What is the capital of France?", "The banana is an elongated, edible fruit."),
]


def test_pointwise_reranker_orders_by_score_in_one_scorer_call(table_scorer):
    reranker = PointwiseReranker(scorer={"type": "table"}, top_k=3)
    out = reranker.run_batch(query=["q", "q b", "q"], documents=[table_scorer, table_scorer, []])
    assert [[d.id for d in docs] for docs in out["documents"]] == [["d", "c", "b"], ["b", "c", "d"], []]
    assert [d.score for d in out["documents"][0]] == [4.0, 3.0, 2.0]
    assert table_scorer[3].score == 1.0, "the input documents are not modified"
    assert TableScorer.calls == [8], "every pair of the batch in one scorer call"


def test_pointwise_reranker_keeps_first_stage_order_on_ties(table_scorer, monkeypatch):
    monkeypatch.setattr(TableScorer, "table", dict.fromkeys([("q", d) for d in "abcd"], 1.0))
    out = PointwiseReranker(scorer={"type": "table"}, top_k=4).run(query="q", documents=table_scorer[::-1])
    assert [d.id for d in out["documents"]] == ["d", "c", "b", "a"]


def test_pointwise_reranker_run_batch_matches_run(table_scorer):
    reranker = PointwiseReranker(scorer={"type": "table"}, top_k=2)
    inputs = [{"query": q, "documents": table_scorer, "top_k": k} for q, k in (("q", None), ("q a", 1), ("q b", 4))]
    assert_run_batch_matches_run(reranker, inputs)


def test_a_scorer_that_returns_the_wrong_number_of_scores_is_an_error(table_scorer, monkeypatch):
    monkeypatch.setattr(TableScorer, "score", lambda self, pairs: np.zeros(len(pairs) + 1))
    with pytest.raises(RuntimeError, match="PointwiseReranker: its scorer gave"):
        PointwiseReranker(scorer={"type": "table"}).run(query="q", documents=table_scorer)


def test_bad_scorer_specs_are_refused():
    with pytest.raises(ValueError, match="unknown scorer type 'nope'"):
        PointwiseReranker(scorer={"type": "nope"})
    with pytest.raises(ValueError, match="scorer 'llm-graded': .*scale"):
        make_scorer({"type": "llm-graded", "scale": 0})
    with pytest.raises(ValueError, match="set the component's device"):
        make_scorer({"type": "bi-encoder", "device": "cpu"})


def test_expected_grade_separates_a_grade_from_the_longer_grade_it_begins():
    grades = [str(g) for g in range(11)]
    probabilities = np.zeros((2, 11))
    probabilities[0, [1, 10]] = [0.5, 0.3]  # "1" as first token 0.5, of which "10" is 0.3: P(1) = 0.2
    probabilities[1, 7] = 0.25  # all mass elsewhere but 7: renormalised, the grade is 7
    assert np.allclose(expected_grades(probabilities, grades), [(0.2 * 1 + 0.3 * 10) / 0.5, 7.0])
    assert np.allclose(expected_grades(np.zeros((1, 11)), grades), [5.0]), "no mass on any grade: uniform"


def test_bi_encoder_scorer_is_the_cosine_of_minilm_embeddings():
    scorer = BiEncoderScorer(device="cpu", cache=False)
    pairs = [("Who founded the mill?", "The mill was founded by Ada."), ("Who founded the mill?", "Bananas.")]
    scores = scorer.score(pairs)
    vectors = scorer._encoder.encode([pairs[0][0], pairs[0][1], pairs[1][1]], normalize_embeddings=True)
    assert np.allclose(scores, [vectors[0] @ vectors[1], vectors[0] @ vectors[2]], atol=1e-5)
    assert scores[0] > scores[1] and scorer.score([]).shape == (0,)


@pytest.mark.slow
def test_llm_scorer_on_smollm2_scores_all_pairs_in_one_call():
    scorer = LLMScorer(llm=TINY_LLM, cache=False)
    scores = scorer.score(PAIRS)
    assert scores.shape == (2,) and np.all(np.isfinite(scores))
    assert scorer._llm.calls == 2 and scorer._llm.hits == 0
    with pytest.raises(ValueError, match="placeholders"):
        LLMScorer(prompt="Is it relevant?")


@pytest.mark.slow
def test_llm_graded_scorer_on_smollm2_is_the_expected_grade_of_its_log_probabilities():
    scorer = LLMGradedScorer(llm=TINY_LLM, scale=5, cache=False)
    scores = scorer.score(PAIRS)
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 5))
    prompts = [[{"role": "user", "content": scorer._prompt_text(q, p)}] for q, p in PAIRS]
    assert "from 0 (unrelated) to 5" in prompts[0][0]["content"]
    log_probs = np.array(scorer._backend.score(prompts, [str(g) for g in range(6)]))
    probabilities = np.exp(log_probs) / np.exp(log_probs).sum(axis=1, keepdims=True)  # one-digit grades only
    assert np.allclose(scores, probabilities @ np.arange(6), atol=1e-4)


def test_a_pipeline_wide_llm_override_reaches_scorer_specs():
    data = load_pipeline_data(YAML_DIR / "decompose-rerank.yaml", {"llm": TINY_LLM})
    assert data["components"]["decompose"]["init_parameters"]["llm"] == TINY_LLM
    assert data["components"]["rerank"]["init_parameters"]["scorer"]["llm"] == TINY_LLM
