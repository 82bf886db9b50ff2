"""hopstack components: batch equals single, inputs are checked, and corpora load with clear errors."""

from typing import Any

import pytest
from haystack import component

from hopstack.components.retrieval import BM25Retriever, DenseRetriever
from hopstack.core.batch import BatchComponent, batch_size_of
from hopstack.errors import HopstackInputError
from hopstack.index.corpus import corpus_documents, resolve_index_path
from hopstack.index.formats import read_corpus
from hopstack.testing import assert_run_batch_matches_run


def test_bm25_run_batch_matches_run(sample_corpus, sample_questions):
    retriever = BM25Retriever(index=str(sample_corpus), top_k=5)
    inputs = [{"query": q.question, "top_k": k} for q, k in zip(sample_questions, [1, 3, None] * 8)]
    single = assert_run_batch_matches_run(retriever, inputs)
    assert [len(out["documents"]) for out in single[:3]] == [1, 3, 5]


def test_bm25_ranks_the_gold_document_first_for_a_lexical_question(sample_corpus):
    retriever = BM25Retriever(index=str(sample_corpus), top_k=3)
    retriever.warm_up()
    docs = retriever.run(query="In what year was the Tarnwick Lighthouse finished?")["documents"]
    assert docs[0].meta["title"] == "Tarnwick Lighthouse"
    assert docs[0].score >= docs[1].score >= docs[2].score > 0


def test_bm25_returns_nothing_for_a_query_without_known_terms(sample_corpus):
    retriever = BM25Retriever(index=str(sample_corpus))
    assert retriever.run(query="zzzqx qqqv")["documents"] == []


@pytest.mark.slow
def test_dense_run_batch_matches_run(sample_corpus, sample_questions):
    retriever = DenseRetriever(index=str(sample_corpus), top_k=4, device="cpu")
    inputs = [{"query": q.question, "top_k": None} for q in sample_questions[:24]]  # each also run alone
    single = assert_run_batch_matches_run(retriever, inputs, rel=1e-4)
    assert all(len(out["documents"]) == 4 for out in single)


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="method must be one of"):
        BM25Retriever(method="okapi")
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        BM25Retriever(top_k=0)


def test_init_is_lightweight_and_serialisable():
    from haystack.core.serialization import component_to_dict

    retriever = BM25Retriever(index="/does/not/exist.jsonl", top_k=3)  # nothing is read before warm_up
    data = component_to_dict(retriever, "bm25")
    assert data["init_parameters"]["index"] == "/does/not/exist.jsonl"
    assert data["init_parameters"]["top_k"] == 3
    with pytest.raises(HopstackInputError, match="does not exist"):
        retriever.warm_up()


def test_index_falls_back_to_the_environment(monkeypatch, sample_corpus):
    monkeypatch.setenv("HOPSTACK_INDEX", str(sample_corpus))
    assert resolve_index_path(None) == sample_corpus
    monkeypatch.delenv("HOPSTACK_INDEX")
    with pytest.raises(HopstackInputError, match="no index given"):
        resolve_index_path(None)


def test_corpus_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"id": "a", "text": "x"}\n{"id": "b", "text": \n', encoding="utf-8")
    with pytest.raises(HopstackInputError, match=r"corpus.jsonl:2: not valid JSON"):
        read_corpus(bad)
    bad.write_text('{"id": "a", "text": "x"}\n\n{"id": "a", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(HopstackInputError, match=r"corpus.jsonl: duplicate document id 'a'"):
        read_corpus(bad)
    bad.write_text('{"id": "a", "body": "x"}\n', encoding="utf-8")
    with pytest.raises(HopstackInputError, match=r"corpus.jsonl:1: a corpus line needs 'id' and 'text'"):
        read_corpus(bad)


def test_corpus_keeps_extra_fields_as_meta(sample_corpus):
    docs = corpus_documents(sample_corpus)
    assert len(docs) == 185 and docs[0].id == "d01"
    assert docs[0].meta["title"] == "Brannock Looms" and docs[0].meta["doc_id"] == "d01"


@component
class _Offset(BatchComponent):
    """A component whose batch path adds the batch size: the helper must catch it."""

    @component.output_types(value=int)
    def run(self, value: int) -> dict[str, Any]:
        return {"value": value}

    def run_batch(self, value: list[int]) -> dict[str, list[Any]]:
        return {"value": [v + len(value) for v in value]}


def test_the_batch_helper_catches_a_divergent_run_batch():
    with pytest.raises(AssertionError, match="item 0, output 'value'"):
        assert_run_batch_matches_run(_Offset(), [{"value": 1}, {"value": 2}])


def test_batch_size_of_refuses_ragged_inputs():
    assert batch_size_of({"a": [1, 2], "b": [3, 4]}) == 2
    with pytest.raises(ValueError, match="different lengths"):
        batch_size_of({"a": [1], "b": [1, 2]})


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire", "bm25l", "bm25+"])
def test_batched_bm25_scores_equal_bm25s_get_scores(sample_corpus, sample_questions, method):
    import numpy as np

    retriever = BM25Retriever(index=str(sample_corpus), method=method)
    queries = [q.question for q in sample_questions] + ["Varrow Varrow the", "zzzqx"]
    batched = retriever.score_queries(queries)
    model = retriever._model
    token_ids = model.tokenizer.tokenize(queries, update_vocab=False, show_progress=False, return_as="ids")
    reference = np.vstack([model.bm25.get_scores(ids) if ids else np.zeros(batched.shape[1]) for ids in token_ids])
    assert batched.shape == (len(queries), 185)
    np.testing.assert_allclose(batched, reference, rtol=1e-5, atol=1e-5)
