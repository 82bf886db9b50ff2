"""Iterative retrieval: the hop loop over BM25 on the sample corpus with scripted query writers, per-question
stopping, the hop budget, the merge orders, and batch/single equality."""

import pytest

from conftest import YAML_DIR
from hopstack.components.iterate import IterativeRetriever, QueryReformulator
from hopstack.testing import assert_run_batch_matches_run

TINY_LLM = {"type": "llama.cpp", "init_parameters": {"model": "smollm2-135m", "n_ctx": 2048}}
BM25 = {"type": "hopstack.components.retrieval.BM25Retriever", "init_parameters": {"top_k": 3}}
REFORMULATOR = {"type": "hopstack.components.iterate.QueryReformulator", "init_parameters": {"llm": TINY_LLM}}


class Queries:
    """A scripted query writer: the next query is ``query`` whatever the question; records calls."""

    def __init__(self, query):
        self.query, self.calls = query, []

    def generate(self, prompts, max_tokens):
        self.calls.append(len(prompts))
        return [f'"{self.query}"\nbecause ...' for _ in prompts]


def _iterative(sample_corpus, stopper, next_query="Edda Varrow born", **params):
    retriever = IterativeRetriever(
        retriever=BM25, stopper=stopper, reformulator=REFORMULATOR, index=str(sample_corpus), **params
    )
    retriever.warm_up()
    retriever._reformulator._llm = Queries(next_query)
    calls = []
    run_batch = retriever._retriever.run_batch

    def counted(query):
        calls.append(list(query))
        return run_batch(query=query)

    retriever._retriever.run_batch = counted
    return retriever, calls


def _stopper(kind, **params):
    return {"type": f"hopstack.components.stopping.{kind}", "init_parameters": params}


QUESTIONS = ["In which town was the founder of Brannock Looms born?", "What was the harbour cat called?"]


def test_questions_that_stop_leave_the_next_hops_batch(sample_corpus):
    stopper = _stopper("ScoreThresholdStopper", threshold=2.0)
    retriever, calls = _iterative(sample_corpus, stopper, next_query="xyzzy plugh", max_hops=3)  # finds nothing
    first_scores = [docs[0].score for docs in retriever._retriever.run_batch(query=QUESTIONS)["documents"]]
    calls.clear()
    out = retriever.run_batch(query=QUESTIONS)
    stops_at_once = [s >= 2.0 for s in first_scores]
    assert stops_at_once.count(True) == 1, f"the test needs one question over the threshold: {first_scores}"
    going = QUESTIONS[stops_at_once.index(False)]
    assert calls == [QUESTIONS, ["xyzzy plugh"], ["xyzzy plugh"]], "the stopped question left the batch"
    assert [t["hops"] for t in out["trace"]] == [1 if s else 3 for s in stops_at_once]
    assert [t["stopped"] for t in out["trace"]] == ["stopper" if s else "budget" for s in stops_at_once]
    trace = out["trace"][QUESTIONS.index(going)]
    assert trace["queries"] == [going, "xyzzy plugh", "xyzzy plugh"]
    assert len(trace["stopper"]) == 2, "no stopper call after the last hop: the budget ends the loop"
    assert retriever._reformulator._llm.calls == [1, 1]


def test_fixed_hops_stop_every_question_after_that_many_hops(sample_corpus):
    retriever, calls = _iterative(sample_corpus, _stopper("FixedHopsStopper", hops=2), max_hops=3)
    out = retriever.run_batch(query=QUESTIONS)
    assert [len(c) for c in calls] == [2, 2] and [t["hops"] for t in out["trace"]] == [2, 2]
    assert all(t["stopped"] == "stopper" for t in out["trace"])


def test_merge_orders_and_top_k(sample_corpus):
    stopper = _stopper("FixedHopsStopper", hops=2)
    interleaved, _ = _iterative(sample_corpus, stopper, max_hops=2)
    appended, _ = _iterative(sample_corpus, stopper, max_hops=2, merge="append")
    hop_one = interleaved._retriever.run_batch(query=QUESTIONS[:1])["documents"][0]
    hop_two = interleaved._retriever.run_batch(query=["Edda Varrow born"])["documents"][0]
    [merged] = interleaved.run_batch(query=QUESTIONS[:1])["documents"]
    expected = list(dict.fromkeys(d.id for pair in zip(hop_one, hop_two) for d in pair))
    assert [d.id for d in merged] == expected
    [listed] = appended.run_batch(query=QUESTIONS[:1])["documents"]
    assert [d.id for d in listed] == list(dict.fromkeys(d.id for d in [*hop_one, *hop_two]))
    capped, _ = _iterative(sample_corpus, stopper, max_hops=2, top_k=2)
    assert [d.id for d in capped.run(query=QUESTIONS[0])["documents"]] == expected[:2]


def test_batch_equals_single_runs(sample_corpus):
    retriever, _ = _iterative(sample_corpus, _stopper("ScoreThresholdStopper", threshold=2.0), max_hops=3)
    assert_run_batch_matches_run(retriever, [{"query": q} for q in QUESTIONS])
    assert retriever.run_batch(query=[]) == {"documents": [], "trace": []}


def test_bad_settings_are_refused(sample_corpus):
    with pytest.raises(ValueError, match="max_hops"):
        IterativeRetriever(retriever=BM25, stopper=_stopper("FixedHopsStopper"), max_hops=0)
    with pytest.raises(ValueError, match="merge"):
        IterativeRetriever(retriever=BM25, stopper=_stopper("FixedHopsStopper"), merge="zip")
    with pytest.raises(ValueError, match="stopper"):
        IterativeRetriever(retriever=BM25, stopper={"init_parameters": {}})


def test_reformulated_queries_are_the_first_line_unquoted_or_the_question():
    reformulator = QueryReformulator(llm=TINY_LLM)

    class Replies:
        def generate(self, prompts, max_tokens):
            return ['  "Edda Varrow birthplace"\nMore text', ""][: len(prompts)]

    reformulator.warm_up = lambda: None
    reformulator._llm = Replies()
    out = reformulator.run_batch(question=["q1", "q2"], documents=[[], []])
    assert out["query"] == ["Edda Varrow birthplace", "q2"]


def test_overrides_reach_nested_components(sample_corpus):
    from hopstack.spec.loading import load_pipeline_data

    data = load_pipeline_data(YAML_DIR / "multihop-natlog.yaml", {"llm": TINY_LLM, "index": str(sample_corpus)})
    params = data["components"]["iterate"]["init_parameters"]
    assert params["index"] == str(sample_corpus)
    assert params["stopper"]["init_parameters"]["llm"] == TINY_LLM
    assert params["reformulator"]["init_parameters"]["llm"] == TINY_LLM
