"""Pseudo-relevance feedback: RM3, vector PRF and text PRF, checked against hand computations, their
no-feedback limits (plain BM25, plain dense) and their batch paths."""

import json
from collections import Counter

import numpy as np
import pytest

from conftest import YAML_DIR, TableScorer
from hopstack.components.expansion import (
    BM25RM3Retriever,
    DensePRFRetriever,
    TextPRFReranker,
)
from hopstack.components.retrieval import BM25Retriever, DenseRetriever
from hopstack.core.spec import SHORT_NAMES
from hopstack.experiments.variants import expand_variants, read_grid
from hopstack.index.store import build_index
from hopstack.models.scorers import make_scorer
from hopstack.testing import assert_outputs_equal, assert_run_batch_matches_run

TINY_CORPUS = [
    {"id": "d1", "text": "apple apple apple banana banana cherry"},
    {"id": "d2", "text": "apple banana durian"},
    {"id": "d3", "text": "cherry elder fig fig"},
    {"id": "d4", "text": "grape honeydew"},
    {"id": "d5", "text": "fig grape kiwi lemon"},
    {"id": "d6", "text": "lemon mango banana"},
]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in TINY_CORPUS), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def sample_index(tmp_path_factory, sample_corpus):
    """The sample corpus as an index folder with BM25 and MiniLM embeddings (one chunk per document)."""
    out = tmp_path_factory.mktemp("indexes") / "sample"
    build_index(sample_corpus, out, device="cpu")
    return str(out)


def _tiny_rm3(tiny_corpus, **parameters) -> BM25RM3Retriever:
    return BM25RM3Retriever(index=tiny_corpus, stemmer=None, stopwords=None, max_df_ratio=None, **parameters)


# -- RM3 -------------------------------------------------------------------------------------------
def test_rm3_expansion_by_hand_with_one_feedback_document(tiny_corpus):
    """fb_docs 1: P(t|R) = tf/|d| of d1 (apple 3/6, banana 2/6, cherry 1/6); two terms kept and
    renormalised: apple 0.6, banana 0.4; q' = 0.5 * counts + 0.5 * |q| * RM with |q| = 2."""
    retriever = _tiny_rm3(tiny_corpus, fb_docs=1, fb_terms=2, original_query_weight=0.5, top_k=6)
    out = retriever.run(query="apple cherry")
    assert out["feedback"]["feedback_docs"] == 1 and out["feedback"]["unchanged"] is False
    assert list(out["feedback"]["expansion_terms"]) == ["apple", "banana"]
    assert np.allclose(list(out["feedback"]["expansion_terms"].values()), [0.6, 0.4])
    weights = {"apple": 0.5 * 1 + 0.5 * 2 * 0.6, "cherry": 0.5 * 1, "banana": 0.5 * 2 * 0.4}
    per_term = {term: retriever.score_queries([term])[0] for term in weights}
    expected = sum(w * per_term[t] for t, w in weights.items())
    ids = [d.id for d in retriever._documents]
    scored = {d.id: d.score for d in out["documents"]}
    assert scored.keys() == {i for i, s in zip(ids, expected) if s > 0}
    for doc_id, score in scored.items():
        assert score == pytest.approx(expected[ids.index(doc_id)], rel=1e-5)
    assert [d.id for d in out["documents"]] == sorted(scored, key=lambda i: -scored[i])


def test_rm3_relevance_model_equals_a_reference_computation(tiny_corpus):
    retriever = _tiny_rm3(tiny_corpus, fb_docs=3, fb_terms=4)
    query = "apple cherry fig"
    first = BM25Retriever(index=tiny_corpus, stemmer=None, stopwords=None, top_k=3).run(query=query)["documents"]
    texts = {d["id"]: d["text"].split() for d in TINY_CORPUS}
    total = sum(d.score for d in first)
    relevance = Counter()
    for document in first:
        counts = Counter(texts[document.id])
        for term, tf in counts.items():
            relevance[term] += tf / len(texts[document.id]) * document.score / total
    weights = sorted(relevance.values(), reverse=True)
    assert weights[3] > weights[4], "the cut after four terms is not a tie"
    top = dict(sorted(relevance.items(), key=lambda item: -item[1])[:4])
    terms = retriever.run(query=query)["feedback"]["expansion_terms"]
    assert terms.keys() == top.keys()
    assert all(terms[t] == pytest.approx(w / sum(top.values()), rel=1e-5) for t, w in top.items())
    assert list(terms.values()) == sorted(terms.values(), reverse=True), "heaviest first"


def test_rm3_drops_terms_found_in_too_many_documents(tiny_corpus):
    # document frequencies: banana 3 of 6, apple 2, cherry 2; at most 34% keeps apple and cherry only
    terms = _tiny_rm3(tiny_corpus, fb_docs=1, fb_terms=5).run(query="apple")["feedback"]["expansion_terms"]
    assert "banana" in terms
    limited = BM25RM3Retriever(index=tiny_corpus, stemmer=None, stopwords=None, max_df_ratio=0.34, fb_docs=1)
    assert set(limited.run(query="apple")["feedback"]["expansion_terms"]) == {"apple", "cherry"}


def test_rm3_with_original_query_weight_one_is_plain_bm25(sample_corpus, sample_questions):
    queries = [q.question for q in sample_questions]
    rm3 = BM25RM3Retriever(index=str(sample_corpus), top_k=5, original_query_weight=1.0).run_batch(query=queries)
    bm25 = BM25Retriever(index=str(sample_corpus), top_k=5).run_batch(query=queries)
    assert_outputs_equal(rm3["documents"], bm25["documents"])
    assert all(f["expansion_terms"] for f in rm3["feedback"])


def test_rm3_run_batch_matches_run(sample_corpus, sample_questions):
    retriever = BM25RM3Retriever(index=str(sample_corpus), top_k=5)
    inputs = [{"query": q.question, "top_k": k} for q, k in zip(sample_questions, [1, 3, None] * 8)]
    inputs.append({"query": "zzzqx", "top_k": None})
    single = assert_run_batch_matches_run(retriever, inputs)
    assert [len(out["documents"]) for out in single[:3]] == [1, 3, 5]


def test_rm3_over_an_index_folder_equals_rm3_over_the_corpus(sample_index, sample_corpus, sample_questions):
    queries = [q.question for q in sample_questions[:6]]
    stored = BM25RM3Retriever(index=sample_index).run_batch(query=queries)
    memory = BM25RM3Retriever(index=str(sample_corpus)).run_batch(query=queries)
    assert stored["feedback"] == memory["feedback"]
    assert [[d.meta["doc_id"] for d in docs] for docs in stored["documents"]] == [
        [d.id for d in docs] for docs in memory["documents"]
    ]


def test_empty_feedback_leaves_the_query_unchanged_and_is_counted(sample_corpus):
    query = "In what year was the Tarnwick Lighthouse finished?"
    out = BM25RM3Retriever(index=str(sample_corpus)).run_batch(query=["zzzqx qqqv", query])
    assert out["documents"][0] == [] and out["documents"][1]
    assert out["feedback"][0] == {"feedback_docs": 0, "expansion_terms": {}, "unchanged": True}
    assert out["feedback"][1]["unchanged"] is False
    # documents were fed back but every term of theirs is too common to expand with: plain BM25
    no_terms = BM25RM3Retriever(index=str(sample_corpus), max_df_ratio=0.001).run(query=query)
    assert no_terms["feedback"] == {"feedback_docs": 10, "expansion_terms": {}, "unchanged": True}
    assert_outputs_equal(no_terms["documents"], BM25Retriever(index=str(sample_corpus)).run(query=query)["documents"])


def test_invalid_prf_parameters_are_refused():
    with pytest.raises(ValueError, match="original_query_weight must be between 0 and 1"):
        BM25RM3Retriever(original_query_weight=1.5)
    with pytest.raises(ValueError, match="fb_docs and fb_terms must be non-negative"):
        BM25RM3Retriever(fb_terms=-1)
    with pytest.raises(ValueError, match=r"rocchio_weights must be \[alpha, beta\]"):
        DensePRFRetriever(rocchio_weights=[0.5])
    with pytest.raises(ValueError, match="aggregation must be one of borda, sum, max"):
        TextPRFReranker(scorer={"type": "bi-encoder"}, aggregation="avg")
    with pytest.raises(
        ValueError, match="scorer: unknown type 'monot5': use a registered short name .*cross-encoder, bi-encoder, llm"
    ):
        make_scorer({"type": "monot5"})
    with pytest.raises(ValueError, match="set the component's device"):
        make_scorer({"type": "bi-encoder", "init_parameters": {"device": "cpu"}})
    with pytest.raises(ValueError, match="scorer: missing required init parameter 'model' for CrossEncoderScorer"):
        make_scorer({"type": "cross-encoder"})


# -- vector PRF ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def dense_baseline(sample_index, sample_questions):
    queries = [q.question for q in sample_questions]
    return queries, DenseRetriever(index=sample_index, top_k=5, device="cpu").run_batch(query=queries)


@pytest.mark.parametrize(
    ("fb_docs", "rocchio_weights"), [(0, None), (5, [1.0, 0.0])], ids=["average-k0", "rocchio-1-0"]
)
def test_vector_prf_without_feedback_weight_is_plain_dense(sample_index, dense_baseline, fb_docs, rocchio_weights):
    queries, plain = dense_baseline
    prf = DensePRFRetriever(
        index=sample_index, top_k=5, fb_docs=fb_docs, rocchio_weights=rocchio_weights, device="cpu"
    ).run_batch(query=queries)
    assert_outputs_equal(prf["documents"], plain["documents"], rel=1e-5)
    assert all(f["unchanged"] == (fb_docs == 0) for f in prf["feedback"])


@pytest.mark.parametrize("rocchio_weights", [None, [0.4, 0.6]], ids=["average", "rocchio"])
def test_vector_prf_searches_the_combined_vector(sample_index, rocchio_weights):
    retriever = DensePRFRetriever(index=sample_index, top_k=4, fb_docs=2, rocchio_weights=rocchio_weights)
    retriever.warm_up()
    query = "Who founded Brannock Looms?"
    q = retriever.embed_queries([query])[0]
    vectors = np.asarray(retriever._document_vectors)
    assert np.allclose(vectors, retriever._faiss_index.reconstruct_n(0, len(vectors)))
    feedback = np.argsort(-(vectors @ q), kind="stable")[:2]
    if rocchio_weights is None:
        expected = (q + vectors[feedback].sum(axis=0)) / 3
    else:
        expected = 0.4 * q + 0.6 * vectors[feedback].mean(axis=0)
    expected /= np.linalg.norm(expected)
    out = retriever.run(query=query)
    assert out["feedback"] == {"feedback_docs": 2, "unchanged": False}
    reference = vectors @ expected
    assert [d.id for d in out["documents"]] == [retriever._documents[i].id for i in np.argsort(-reference)[:4]]
    assert np.allclose([d.score for d in out["documents"]], np.sort(reference)[::-1][:4], atol=1e-5)


def test_vector_prf_run_batch_matches_run(sample_corpus, sample_questions):
    # a corpus embedded in memory: the feedback vectors are read back from the FAISS index
    retriever = DensePRFRetriever(index=str(sample_corpus), top_k=4, fb_docs=5, rocchio_weights=[0.7, 0.3])
    inputs = [{"query": q.question, "top_k": k} for q, k in zip(sample_questions, [2, None, 4] * 8)]
    assert_run_batch_matches_run(retriever, inputs, rel=1e-4)
    assert np.allclose(np.linalg.norm(retriever._document_vectors, axis=1), 1.0, atol=1e-5)


# -- text PRF --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("aggregation", "order", "scores"),
    [
        # voter "q a" ranks a c b d, voter "q b" ranks b c d a; Borda points (n - rank + 1) / n, n = 4
        ("borda", "bcad", [1.5, 1.5, 1.25, 0.75]),
        ("sum", "cabd", [6.5, 5.0, 5.0, 2.0]),  # a and b tie: first-stage order
        ("max", "abcd", [5.0, 4.0, 3.5, 2.0]),
    ],
)
def test_text_prf_aggregates_the_feedback_queries_votes(table_scorer, aggregation, order, scores):
    reranker = TextPRFReranker(scorer={"type": "table"}, fb_docs=2, aggregation=aggregation, top_k=4)
    out = reranker.run_batch(query=["q", "q"], documents=[table_scorer, table_scorer[:0]])
    assert "".join(d.id for d in out["documents"][0]) == order
    assert np.allclose([d.score for d in out["documents"][0]], scores)
    assert out["documents"][1] == []
    assert out["feedback"] == [{"feedback_docs": 2, "unchanged": False}, {"feedback_docs": 0, "unchanged": True}]
    assert TableScorer.calls == [8], "every pair of the batch in one scorer call"


def test_text_prf_without_feedback_scores_with_the_query_alone(table_scorer):
    out = TextPRFReranker(scorer={"type": "table"}, fb_docs=0, aggregation="sum", top_k=3).run(
        query="q", documents=table_scorer
    )
    assert [d.id for d in out["documents"]] == ["d", "c", "b"] and out["feedback"]["unchanged"] is True


def test_text_prf_run_batch_matches_run(table_scorer):
    reranker = TextPRFReranker(scorer={"type": "table"}, fb_docs=2, top_k=3)
    inputs = [{"query": "q", "documents": table_scorer, "top_k": k} for k in (None, 1, 4)]
    assert_run_batch_matches_run(reranker, inputs)


class _RecordingScorer:
    """A scorer that scores 0 and keeps the pairs it was given."""

    pairs: list[tuple[str, str]] = []

    def warm_up(self) -> None:
        pass

    def score(self, pairs):
        type(self).pairs.extend(pairs)
        return np.zeros(len(pairs), dtype=np.float32)


def test_text_prf_cuts_each_feedback_query_to_its_first_words(monkeypatch, table_scorer):
    monkeypatch.setitem(SHORT_NAMES, "recording", _RecordingScorer)
    _RecordingScorer.pairs = []
    query = " ".join(f"w{i}" for i in range(300))
    TextPRFReranker(scorer={"type": "recording"}, fb_docs=1).run(query=query, documents=table_scorer)
    voters = {voter for voter, _ in _RecordingScorer.pairs}
    assert voters == {" ".join(f"w{i}" for i in range(256))}, "q + passage, first 256 words"
    assert [passage for _, passage in _RecordingScorer.pairs] == list("abcd")


# -- pipelines -------------------------------------------------------------------------------------
PRF_PIPELINES = ["bm25-rm3", "dense-prf", "hybrid-prf", "text-prf", "hybrid-text-prf"]


def test_prf_pipelines_validate(cli):
    code, out, err = cli("validate", *[YAML_DIR / f"{name}.yaml" for name in PRF_PIPELINES])
    assert code == 0, err
    assert all(f"ok {YAML_DIR / name}.yaml" in out for name in PRF_PIPELINES)


def test_prf_grid_expands_into_valid_variants():
    grid = read_grid(YAML_DIR.parent / "demos" / "prf.yaml")
    variants = expand_variants([], grid)
    assert sum(v.pipeline.stem == "dense-prf" for v in variants) == 6


@pytest.mark.parametrize("grid_file", sorted((YAML_DIR.parent / "demos").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_grid_expands_into_valid_variants(grid_file):
    variants = expand_variants([], read_grid(grid_file))
    assert variants and all(v.error is None for v in variants), [v.error for v in variants if v.error]
