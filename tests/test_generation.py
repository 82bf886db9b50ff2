"""The reader: answer cleaning, the prompt, batching, evaluation with EM/F1/Acc,
and a real SmolLM2 answer."""

import math

import pytest
from haystack import Document

from hopstack.components.generation import AnswerGenerator, clean_answer
from hopstack.experiments.metrics import final_documents, predicted_answer
from hopstack.testing import assert_run_batch_matches_run

TINY_LLM = {"type": "llama.cpp", "init_parameters": {"model": "smollm2-135m", "n_ctx": 2048}}


@pytest.mark.parametrize(
    ("reply", "answer"),
    [
        ("Answer: Ada Brannock.", "Ada Brannock"),
        ("\n\n  **Ada Brannock**\nBecause the first document says so.", "Ada Brannock"),
        ("yes, both report it.", "Yes"),
        ("No.", "No"),
        ('"Sam Bankman-Fried"', "Sam Bankman-Fried"),
        ("Final answer - 1820", "1820"),
        ("Nobody knows", "Nobody knows"),
        ("", ""),
    ],
)
def test_clean_answer_keeps_the_short_answer(reply, answer):
    assert clean_answer(reply) == answer


class _Reader:
    """A fake LLM that answers with the first word of the last document listed, each token with probability
    0.5 (log-probs [ln 0.5, ln 0.25] for "I don't know"); records the prompts."""

    def __init__(self):
        self.prompts = []

    def generate_scored(self, prompts, max_tokens):
        self.prompts.extend(prompts)
        replies = []
        for prompt in prompts:
            lines = [line for line in prompt[-1]["content"].splitlines() if line.startswith("[")]
            if lines:
                replies.append((f"Answer: {lines[-1].split()[1]}.", [math.log(0.5)] * 3))
            else:
                replies.append(("I don't know", [math.log(0.5), math.log(0.25)]))
        return replies


def _reader(**params):
    reader = AnswerGenerator(llm=TINY_LLM, **params)
    reader._llm = _Reader()
    return reader


def test_reader_reads_the_first_documents_and_returns_a_generated_answer():
    reader = _reader(max_documents=2, max_passage_words=3)
    documents = [Document(id=i, content=f"{w} is here today") for i, w in (("1", "Oslo"), ("2", "Lima"), ("3", "Rome"))]
    [answer] = reader.run(query="Which city?", documents=documents)["answers"]
    assert answer.data == "Lima" and answer.query == "Which city?"
    assert [d.id for d in answer.documents] == ["1", "2"]
    assert answer.meta == {"raw": "Answer: Lima.", "confidence": pytest.approx(0.5), "supporting_documents": ["2"]}
    prompt = reader._llm.prompts[0]
    assert prompt[0]["role"] == "system" and [m["role"] for m in prompt[1:5]] == ["user", "assistant"] * 2
    assert prompt[-1]["content"] == "Documents:\n[1] Oslo is here\n[2] Lima is here\n\nQuestion: Which city?\nAnswer:"
    assert predicted_answer({"reader": {"answers": [answer]}}) == ("Lima", answer.documents)
    assert final_documents({"reader": {"answers": [answer]}}) == answer.documents, "what the reader read"


def test_reader_run_batch_matches_run_and_answers_without_documents():
    reader = _reader()
    documents = [Document(id="x", content="Paris is large")]
    inputs = [{"query": "q1", "documents": documents}, {"query": "q2", "documents": []}]
    assert_run_batch_matches_run(reader, inputs)
    [unsure] = reader.run(query="q2", documents=[])["answers"]
    assert unsure.data == "I don't know" and unsure.meta["confidence"] == pytest.approx(0.375), "mean token probability"


def test_bad_reader_parameters_are_refused():
    with pytest.raises(ValueError, match="few_shot"):
        AnswerGenerator(llm=TINY_LLM, few_shot=[{"question": "q"}])
    with pytest.raises(ValueError, match="at least 1"):
        AnswerGenerator(llm=TINY_LLM, max_documents=0)


@pytest.mark.slow
def test_reader_on_smollm2_gives_a_short_answer():
    documents = [Document(id="m", content="Ada Brannock founded the Brannock Looms mill in 1820.")]
    [answer] = AnswerGenerator(llm=TINY_LLM, cache=False).run(query="Who founded Brannock Looms?", documents=documents)[
        "answers"
    ]
    assert answer.data and "\n" not in answer.data and len(answer.data.split()) <= 32
    assert 0.0 < answer.meta["confidence"] <= 1.0


def test_answers_compare_equal_within_float_tolerance_only():
    from haystack.dataclasses import GeneratedAnswer

    from hopstack.testing import assert_outputs_equal

    def answer(text, score):
        return GeneratedAnswer(data=text, query="q", documents=[Document(id="d", content="x", score=score)], meta={})

    assert_outputs_equal([answer("Oslo", 0.70661085)], [answer("Oslo", 0.70661084)])
    with pytest.raises(AssertionError, match="data"):
        assert_outputs_equal([answer("Oslo", 0.5)], [answer("Lima", 0.5)])
