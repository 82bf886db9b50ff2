"""Rerankers and the scorers behind them: ordering, ties, batching, the graded scorer's expectation, and
the real MiniLM and SmolLM2 models."""

import re

import numpy as np
import pytest
from haystack import Document

from conftest import YAML_DIR, TableScorer
from hopstack.components.rerankers import (
    E2RANK_TASK,
    EmbeddingListwiseReranker,
    ListwiseReranker,
    PointwiseReranker,
    window_starts,
)
from hopstack.models.scorers import BiEncoderScorer, LLMGradedScorer, LLMScorer, expected_grades, make_scorer
from hopstack.spec.loading import load_pipeline_data
from hopstack.testing import assert_run_batch_matches_run

TINY_LLM = {"type": "llama.cpp", "init_parameters": {"model": "smollm2-135m", "n_ctx": 512}}
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
    with pytest.raises(ValueError, match="scorer: unknown type 'nope'"):
        PointwiseReranker(scorer={"type": "nope"})
    with pytest.raises(ValueError, match="move them under init_parameters"):
        PointwiseReranker(scorer={"type": "llm", "llm": "qwen2.5-0.5b"})
    with pytest.raises(ValueError, match="scorer: .*scale"):
        make_scorer({"type": "llm-graded", "init_parameters": {"scale": 0}})
    with pytest.raises(ValueError, match="set the component's device"):
        make_scorer({"type": "bi-encoder", "init_parameters": {"device": "cpu"}})


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
    data = load_pipeline_data(YAML_DIR / "hybrid-rerank-llm.yaml", {"llm": TINY_LLM})
    assert data["components"]["pointwise"]["init_parameters"]["scorer"]["init_parameters"]["llm"] == TINY_LLM
    data = load_pipeline_data(YAML_DIR / "decompose-rerank.yaml", {"llm": TINY_LLM})
    assert data["components"]["decompose"]["init_parameters"]["llm"] == TINY_LLM


# -- listwise --------------------------------------------------------------------------------------
class _RelevanceLLM:
    """A fake LLM for listwise prompts: each "[X" gets the relevance of the passage listed as [X]
    (passages are document ids); records the number of prompts of every call."""

    def __init__(self, relevance: dict[str, float]):
        self.relevance = relevance
        self.calls: list[int] = []
        self.prompts: list = []

    def score(self, prompts, candidates):
        self.calls.append(len(prompts))
        self.prompts.extend(prompts)
        rows = []
        for prompt in prompts:
            listed = re.findall(r"^\[([A-Z])\] (.*)$", prompt[-1]["content"], re.MULTILINE)
            by_letter = {f"[{letter}": self.relevance[text.split()[-1]] for letter, text in listed}
            rows.append([by_letter.get(c, -100.0) for c in candidates])
        return rows


def _listwise(relevance, **params):
    reranker = ListwiseReranker(llm=TINY_LLM, **params)
    reranker._llm = _RelevanceLLM(relevance)
    return reranker


def _docs(ids, scores=None):
    return [Document(id=i, content=i, score=s) for i, s in zip(ids, scores or [1.0] * len(ids))]


@pytest.mark.parametrize(
    ("n", "window", "step", "starts"),
    [
        (20, 10, 5, [10, 5, 0]),
        (21, 10, 5, [11, 6, 1, 0]),
        (10, 10, 5, [0]),
        (3, 10, 5, [0]),
        (1, 10, 5, []),
        (0, 4, 2, []),
    ],
)
def test_sliding_windows_go_from_the_bottom_to_the_top(n, window, step, starts):
    assert window_starts(n, window, step) == starts


def test_listwise_windows_bubble_the_best_candidates_to_the_top():
    relevance = {d: float(r) for r, d in enumerate("abcdef")}  # f most relevant, a least: reversed order
    out = _listwise(relevance, window=4, step=2, top_k=6).run(query="q", documents=_docs("abcdef"))
    ids = [d.id for d in out["documents"]]
    assert sorted(ids) == list("abcdef"), "a permutation: nothing dropped or repeated"
    assert ids[:2] == ["f", "e"], "windows [2:6] then [0:4]: the best two reach the top"
    assert [d.score for d in out["documents"]] == [6.0, 5.0, 4.0, 3.0, 2.0, 1.0]


def test_listwise_scores_each_window_position_of_the_batch_in_one_call():
    relevance = {d: float(r) for r, d in enumerate("abcdefgh")}
    reranker = _listwise(relevance, window=4, step=2, top_k=3)
    out = reranker.run_batch(query=["q1", "q2", "q3"], documents=[_docs("abcdef"), _docs("gh"), _docs("a")])
    assert reranker._llm.calls == [2, 1], "first the bottom windows of both lists, then the long list's top one"
    # windows [2:6] then [0:4] of a..f: f e b a d c (only the top `step` are sure to be the best)
    assert [[d.id for d in docs] for docs in out["documents"]] == [["f", "e", "b"], ["h", "g"], ["a"]]


def test_listwise_run_batch_matches_run():
    reranker = _listwise({d: float(ord(d) % 5) for d in "abcdefg"}, window=3, step=1)
    inputs = [
        {"query": "q", "documents": _docs(ids), "top_k": k} for ids, k in (("abcdefg", None), ("cab", 2), ("", 1))
    ]
    assert_run_batch_matches_run(reranker, inputs)


@pytest.mark.parametrize(
    ("insert_scores", "expected"),
    [("raw", "[A] (retrieval score: 12.0) a"), ("minmax", "[A] (retrieval score: 100.0) a")],
)
def test_insertrank_writes_first_stage_scores_into_the_prompt(insert_scores, expected):
    reranker = _listwise({"a": 1.0, "b": 0.0}, insert_scores=insert_scores)
    reranker.run(query="q", documents=_docs("ab", [12.0, 2.0]))
    listed = reranker._llm.prompts[0][-1]["content"]
    assert expected in listed and ("[B] (retrieval score: 0.0) b" in listed) == (insert_scores == "minmax")


def test_bad_listwise_parameters_are_refused():
    with pytest.raises(ValueError, match="window must be between 2 and 26"):
        ListwiseReranker(window=27)
    with pytest.raises(ValueError, match="insert_scores"):
        ListwiseReranker(insert_scores="log")


@pytest.mark.slow
def test_listwise_on_smollm2_returns_a_permutation(sample_corpus):
    documents = [Document(id=str(i), content=f"Passage number {i} about looms and weaving.") for i in range(7)]
    reranker = ListwiseReranker(llm=TINY_LLM, window=4, step=2, top_k=7, cache=False)
    out = reranker.run(query="Who founded Brannock Looms?", documents=documents)
    assert sorted(d.id for d in out["documents"]) == [str(i) for i in range(7)]
    assert reranker._llm.calls == 3, "three windows: [3:7], [1:5], [0:4]"


# -- embedding listwise (E2Rank style) -------------------------------------------------------------
def test_e2rank_pseudo_query_lists_the_top_candidates_around_the_query():
    reranker = EmbeddingListwiseReranker(pseudo_query_docs=2, max_passage_words=2)
    last = reranker.pseudo_query("q?", ["one two three", "four"])
    assert last == f"{E2RANK_TASK}\nDocuments:\n[1] one two\n[2] fourSearch Query:q?"
    reranker.query_position = "first"
    assert reranker.pseudo_query("q?", ["a"]).startswith("Search Query:q?\n")


def test_e2rank_scores_candidates_by_cosine_to_the_pseudo_query_embedding():
    reranker = EmbeddingListwiseReranker(pseudo_query_docs=1, query_position="first", top_k=3, device="cpu")
    documents = [
        Document(id="mill", content="The Brannock mill was founded by Ada Brannock in 1820."),
        Document(id="fruit", content="Bananas are an elongated, edible fruit."),
        Document(id="loom", content="Ada Brannock built looms for the mill."),
    ]
    out = reranker.run(query="Who founded the Brannock mill?", documents=documents)
    pseudo = reranker.pseudo_query("Who founded the Brannock mill?", [documents[0].content])
    encoder = reranker._scorer._encoder
    vectors = encoder.encode([pseudo] + [d.content for d in documents], normalize_embeddings=True)
    expected = vectors[1:] @ vectors[0]
    assert [d.id for d in out["documents"]] == [documents[i].id for i in np.argsort(-expected)]
    assert np.allclose(
        sorted((d.score for d in out["documents"]), reverse=True), sorted(expected, reverse=True), atol=1e-5
    )
