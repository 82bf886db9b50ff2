"""REBEL small-model mode: criteria parsing and fallback, the weighted final score, the relevance
threshold, the tie-break, batching, and a real SmolLM2 run."""

import numpy as np
import pytest
from haystack import Document

from hopstack.components.rebel import FIXED_CRITERIA, REBELReranker, parse_choices, parse_criteria
from hopstack.testing import assert_run_batch_matches_run

TINY_LLM = {"type": "llama.cpp", "init_parameters": {"model": "smollm2-135m", "n_ctx": 1024}}


def test_parse_criteria_reads_the_first_json_list_and_validates_it():
    answer = (
        'Sure! [{"name": "Recency", "definition": "5 = new", "weight": 2}, {"name": "recency"}, '
        '{"name": "Depth", "definition": "5 = deep", "weight": 0.3}, {"name": "", "weight": 1}, "x", '
        '{"name": "A"}, {"name": "B"}] done'
    )
    assert parse_criteria(answer) == [
        {"name": "Recency", "definition": "5 = new", "weight": 1.0},
        {"name": "Depth", "definition": "5 = deep", "weight": 0.3},
        {"name": "A", "definition": "", "weight": 0.5},
    ]
    for bad in ("no json here", "[not json]", '[{"name": 3}]', '{"name": "x"}', '[{"name": "x", "weight": "high"}]'):
        assert parse_criteria(bad) is None, bad


def test_parse_criteria_keeps_the_complete_objects_of_a_cut_off_answer_and_skips_relevance():
    # what Qwen 0.5B wrote for MultiHop-RAG questions: numeric definitions, relevance listed, cut at 200 tokens
    answer = (
        '```json\n[\n  {"name": "Relevance", "definition": 5, "weight": 0.5},\n'
        '  {"name": "Authoritativeness", "definition": 5, "weight": 0.5},\n  {"name": "Depth", "defin'
    )
    assert parse_criteria(answer) == [{"name": "Authoritativeness", "definition": "5", "weight": 0.5}]


class _TableGrader:
    """Grades from tables: relevance by passage, criteria by (criterion, passage)."""

    def __init__(self, table):
        self.table = table

    def score(self, pairs):
        return np.array([self.table[p] for _, p in pairs], dtype=np.float32)


def _rebel(monkeypatch, relevance, criteria, **params):
    reranker = REBELReranker(llm=TINY_LLM, **params)
    reranker._llm = object()  # warm: the graders below stand in for the LLM

    def grader(prompt, scale):
        if scale == 10:
            return _TableGrader(relevance)
        name = next(c for c in criteria if c in prompt)
        return _TableGrader(criteria[name])

    monkeypatch.setattr(reranker, "_grader", grader)
    return reranker


def _docs(ids):
    return [Document(id=i, content=i) for i in ids]


def test_final_score_is_relevance_plus_half_of_each_criterion_and_low_relevance_is_left_out(monkeypatch):
    relevance = {"a": 8.0, "b": 6.0, "c": 2.0, "d": 6.0}
    criteria = {c["name"]: {"a": 0.0, "b": 4.0, "c": 5.0, "d": 4.0} for c in FIXED_CRITERIA}
    criteria["Authoritativeness"] = {"a": 0.0, "b": 1.0, "c": 5.0, "d": 3.0}  # breaks the b-d tie
    reranker = _rebel(monkeypatch, relevance, criteria, top_k=4)
    out = reranker.run(query="q", documents=_docs("abcd"))
    # b: 6 + 0.5 * (4 * 4 + 1) = 14.5; d: 6 + 0.5 * (4 * 4 + 3) = 15.5; a: 8; c below the threshold
    assert [(d.id, d.score) for d in out["documents"]] == [("d", 15.5), ("b", 14.5), ("a", 8.0)]
    assert out["trace"]["below_threshold"] == 1 and out["trace"]["criteria_source"] == "fixed"
    reranker.keep_below_threshold = True
    assert [d.id for d in reranker.run(query="q", documents=_docs("abcd"))["documents"]] == ["d", "b", "a", "c"]


def test_two_turn_criteria_come_from_the_llm_or_fall_back_to_the_fixed_five(monkeypatch):
    relevance = {"a": 5.0, "b": 5.0}
    criteria = {c["name"]: {"a": 1.0, "b": 1.0} for c in FIXED_CRITERIA}
    criteria["Recency"] = {"a": 0.0, "b": 5.0}
    reranker = _rebel(monkeypatch, relevance, criteria, two_turn=True)

    class _Writer:
        def generate(self, prompts, max_tokens):
            good = '[{"name": "Recency", "definition": "5 = this year", "weight": 1.0}]'
            return [good if "first" in p[0]["content"] else "I cannot help" for p in prompts]

    reranker._llm = _Writer()
    out = reranker.run_batch(query=["first q", "second q"], documents=[_docs("ab"), _docs("ab")])
    assert [t["criteria_source"] for t in out["trace"]] == ["llm", "fallback"]
    assert [(d.id, d.score) for d in out["documents"][0]] == [("b", 10.0), ("a", 5.0)]
    assert out["trace"][1]["criteria"][0]["name"] == FIXED_CRITERIA[0]["name"]
    assert [(d.id, d.score) for d in out["documents"][1]] == [("b", 9.5), ("a", 7.0)]


def test_rebel_run_batch_matches_run(monkeypatch):
    relevance = {d: float(i + 2) for i, d in enumerate("abcde")}
    criteria = {c["name"]: {d: float((i * 3) % 6) for i, d in enumerate("abcde")} for c in FIXED_CRITERIA}
    reranker = _rebel(monkeypatch, relevance, criteria, top_k=3)
    inputs = [{"query": "q", "documents": _docs(ids), "top_k": k} for ids, k in (("abcde", None), ("ca", 1), ("", 2))]
    assert_run_batch_matches_run(reranker, inputs)


@pytest.mark.slow
def test_rebel_on_smollm2_scores_and_orders_real_passages():
    documents = [
        Document(id="mill", content="Ada Brannock founded the Brannock Looms mill in 1820 in the northern valley."),
        Document(id="fruit", content="Bananas are an elongated, edible fruit."),
    ]
    reranker = REBELReranker(llm=TINY_LLM, relevance_threshold=0.0, cache=False)
    out = reranker.run(query="Who founded Brannock Looms?", documents=documents)
    assert sorted(d.id for d in out["documents"]) == ["fruit", "mill"]
    assert all(0.0 <= d.score <= 22.5 for d in out["documents"]), "relevance 0-10 plus 5 x 0.5 x (0-5)"
    assert out["trace"]["criteria_source"] == "fixed" and out["trace"]["below_threshold"] == 0


def test_parse_choices_reads_id_and_score_together_and_counts_the_rest():
    answer = (
        "Doc: 2, Relevance: 12.5\nSome chatter\nDocument [3], Relevance = 7\nDoc: 2, Relevance: 3\n"
        "Doc: 0, Relevance: 9\nDoc: 5, Relevance: 9\nDoc: 1, Relevance: high\n\n"
    )
    scores, counts = parse_choices(answer, 4)
    assert scores == {1: 12.5, 2: 7.0}
    assert counts == {"out_of_range": 2, "repeated": 1, "unparsed_lines": 2}
    assert parse_choices("", 3) == ({}, {"out_of_range": 0, "repeated": 0, "unparsed_lines": 0})


class _Answers:
    """An LLM whose answers come from a function of the prompt text; records the prompts."""

    def __init__(self, answer):
        self.answer = answer
        self.prompts = []

    def generate(self, prompts, max_tokens):
        self.prompts.extend(p[0]["content"] for p in prompts)
        return [self.answer(p[0]["content"]) for p in prompts]


def _faithful(answer, **params):
    reranker = REBELReranker(llm=TINY_LLM, mode="faithful", **params)
    reranker._llm = _Answers(answer)
    return reranker


def test_faithful_mode_orders_by_the_llms_final_scores_and_never_duplicates_a_candidate():
    reranker = _faithful(lambda p: "Doc: 3, Relevance: 15.5\nDoc: 1, Relevance: 9\nDoc: 3, Relevance: 2\n")
    out = reranker.run(query="q", documents=_docs("abcd"))
    assert [(d.id, d.score) for d in out["documents"]] == [("c", 15.5), ("a", 9.0)]
    trace = out["trace"]
    assert trace["scored"] == 2 and trace["omitted"] == 2 and trace["repeated"] == 1
    assert trace["prompt_source"] == "fixed" and trace["llm_prompts"] == 1 and trace["fallback_batches"] == 0
    prompt = reranker._llm.prompts[0]
    assert "Document 4:\nd" in prompt and prompt.rstrip().endswith("Question: q\nAnswer:")
    reranker.keep_below_threshold = True
    assert [d.id for d in reranker.run(query="q", documents=_docs("abcd"))["documents"]] == ["c", "a", "b", "d"]


def test_faithful_mode_falls_back_to_first_stage_order_for_a_batch_with_no_usable_line():
    def answer(prompt):  # the batch holding "e" is answered, the first batch is not
        return "Doc: 1, Relevance: 4" if "Document 1:\ne" in prompt else "I think document two is best."

    reranker = _faithful(answer, choice_batch_size=4, top_k=10)
    out = reranker.run(query="q", documents=_docs("abcdef"))
    assert [d.id for d in out["documents"]] == ["e", "a", "b", "c", "d"]
    assert out["trace"]["fallback_batches"] == 1 and out["trace"]["unparsed_lines"] == 1
    assert out["trace"]["llm_prompts"] == 2 and out["trace"]["omitted"] == 1


def test_faithful_two_turn_uses_the_written_prompt_only_when_it_has_both_placeholders():
    def answer(prompt):
        if "prompt generator" in prompt:
            good = "Rank for {query_str} by recency.\n{context_str}\nAnswer:"
            return good if "fresh" in prompt else "Rank the {documents} please."
        return "Doc: 2, Relevance: 6"

    reranker = _faithful(answer, two_turn=True)
    out = reranker.run_batch(query=["fresh q", "other q"], documents=[_docs("ab"), _docs("ab")])
    assert [t["prompt_source"] for t in out["trace"]] == ["llm", "fallback"]
    assert [t["llm_prompts"] for t in out["trace"]] == [2, 2]
    ranking_prompts = [p for p in reranker._llm.prompts if "prompt generator" not in p]
    assert ranking_prompts[0].startswith("Rank for fresh q by recency.\nDocument 1:\na")
    assert "Compute Final = Relevance" in ranking_prompts[1]
    assert [[d.id for d in docs] for docs in out["documents"]] == [["b"], ["b"]]


def test_rebel_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        REBELReranker(llm=TINY_LLM, mode="creative")
