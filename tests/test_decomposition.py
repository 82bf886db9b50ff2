"""Question decomposition and multi-query retrieval."""

import pytest

from hopstack.components.decomposition import MultiQueryRetriever, QuestionDecomposer, parse_sub_questions
from hopstack.components.retrieval import BM25Retriever
from hopstack.models.cache import CachedLLM
from hopstack.testing import assert_run_batch_matches_run

BM25_SPEC = {"type": "hopstack.components.retrieval.BM25Retriever", "init_parameters": {"top_k": 3}}


class _ScriptedLLM:
    """Answers each prompt with the next scripted text; records the prompts."""

    def __init__(self, answers: list[str]):
        self.answers = list(answers)
        self.prompts: list = []

    def generate(self, prompts, max_tokens=128, temperature=0.0, stop=None, seed=0):
        self.prompts.extend(prompts)
        return [self.answers.pop(0) for _ in prompts]


def _decomposer(answers: list[str], **params) -> tuple[QuestionDecomposer, _ScriptedLLM]:
    decomposer = QuestionDecomposer(**params)
    decomposer._llm = llm = _ScriptedLLM(answers)
    return decomposer, llm


def test_parsing_strips_markers_drops_repeats_and_the_question_and_caps():
    answer = (
        "1. Who founded Brannock Looms?\n"
        "- Where was Edda Varrow born?\n"
        "\n"
        "2) who founded brannock looms\n"
        "* In which town was the founder of Brannock Looms born?\n"
        "Q3: What river runs through Hollin Ford?\n"
        "• Sub-question 4: When was the mill built?\n"
        '"Which weaving frames did the mill build?"\n'
    )
    question = "In which town was the founder of Brannock Looms born?"
    assert parse_sub_questions(answer, question, 5) == [
        "Who founded Brannock Looms?",
        "Where was Edda Varrow born?",
        "What river runs through Hollin Ford?",
        "When was the mill built?",
        "Which weaving frames did the mill build?",
    ]
    assert parse_sub_questions(answer, question, 2) == ["Who founded Brannock Looms?", "Where was Edda Varrow born?"]
    assert parse_sub_questions("", question, 5) == []


def test_the_original_question_comes_first_and_few_shot_examples_are_chat_turns():
    decomposer, llm = _decomposer(["Who founded Brannock Looms?\nWhere was Edda Varrow born?"], max_sub_questions=3)
    out = decomposer.run(question="In which town was the founder of Brannock Looms born?")
    assert out["queries"] == [
        "In which town was the founder of Brannock Looms born?",
        "Who founded Brannock Looms?",
        "Where was Edda Varrow born?",
    ]
    assert out["decomposition"]["fallback"] is False and out["decomposition"]["sub_questions"] == 2
    [messages] = llm.prompts
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert "at most 3 sub-questions" in messages[-1]["content"]
    assert messages[2]["content"] == "Which company makes the Model Y?\nWhich companies own a battery plant in Nevada?"


def test_an_answer_without_a_usable_sub_question_falls_back_to_the_question_alone():
    question = "Who was born first, the director of Jaws or the author of Dune?"
    decomposer, _ = _decomposer([question + "\n", "   \n- \n"])
    outputs = decomposer.run_batch(question=[question, question])
    assert outputs["queries"] == [[question], [question]]
    assert [d["fallback"] for d in outputs["decomposition"]] == [True, True]


def test_zero_sub_questions_makes_no_llm_call():
    decomposer, llm = _decomposer([], max_sub_questions=0)
    assert decomposer.run(question="Why?")["queries"] == ["Why?"] and llm.prompts == []


def test_bad_settings_are_refused_at_construction():
    with pytest.raises(ValueError, match="max_sub_questions must be at least 0"):
        QuestionDecomposer(max_sub_questions=-1)
    with pytest.raises(ValueError, match=r"few_shot\[1\] must be a mapping with 'question' and 'sub_questions'"):
        QuestionDecomposer(few_shot=[{"question": "a", "sub_questions": ["b"]}, {"question": "c"}])


@pytest.mark.slow
def test_decomposer_on_a_real_llm_batches_like_it_runs_and_goes_through_the_call_cache():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is part of the local extra")
    decomposer = QuestionDecomposer(
        llm={"type": "llama.cpp", "init_parameters": {"model": "smollm2-135m", "n_ctx": 1024}}, max_tokens=48
    )
    questions = ["In which town was the founder of Brannock Looms born?", "Which river runs through Hollin Ford?"]
    single = assert_run_batch_matches_run(decomposer, [{"question": q} for q in questions])
    assert isinstance(decomposer._llm, CachedLLM)
    for question, out in zip(questions, single):
        assert out["queries"][0] == question and len(out["queries"]) <= 6
        assert isinstance(out["decomposition"]["llm_answer"], str)


def test_multi_query_retrieval_pools_every_query_in_one_batched_call(sample_corpus, monkeypatch):
    retriever = MultiQueryRetriever(retriever=BM25_SPEC, index=str(sample_corpus), top_k=5)
    retriever.warm_up()
    calls = []
    inner = retriever._retriever
    original = inner.run_batch
    monkeypatch.setattr(inner, "run_batch", lambda **kw: calls.append(len(kw["query"])) or original(**kw))
    queries = [["Who founded Brannock Looms?", "Where was Edda Varrow born?"], ["Tarnwick Lighthouse"]]
    pools = retriever.run_batch(queries=queries)["documents"]
    assert calls == [3]
    plain = BM25Retriever(index=str(sample_corpus), top_k=3)
    for question_queries, pool in zip(queries, pools):
        best: dict = {}
        for query in question_queries:
            for document in plain.run(query=query)["documents"]:
                best[document.id] = max(best.get(document.id, float("-inf")), document.score)
        expected = sorted(best.items(), key=lambda item: -item[1])[:5]
        assert [(d.id, pytest.approx(d.score)) for d in pool] == [(i, pytest.approx(s)) for i, s in expected]
    monkeypatch.undo()
    assert_run_batch_matches_run(retriever, [{"queries": q} for q in queries])


def test_multi_query_retriever_passes_the_index_on_and_refuses_bad_nested_specs(sample_corpus):
    retriever = MultiQueryRetriever(retriever=BM25_SPEC, index=str(sample_corpus))
    assert retriever._retriever.index == str(sample_corpus)
    assert retriever.content_identity() == retriever._retriever.content_identity()
    with pytest.raises(ValueError, match=r"retriever must be a mapping \{type, init_parameters\}"):
        MultiQueryRetriever(retriever={"init_parameters": {}})
    with pytest.raises(ValueError, match="retriever has key\\(s\\) params beside 'type'"):
        MultiQueryRetriever(retriever={**BM25_SPEC, "params": {}})
    with pytest.raises(ValueError, match="retriever: module 'os' is outside the allowlist"):
        MultiQueryRetriever(retriever={"type": "os.system"})
