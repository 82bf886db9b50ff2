"""Answer generation: the reader that answers a question from retrieved documents (or clues).

:class:`AnswerGenerator` lists the first ``max_documents`` documents in a short-answer prompt, asks any LLM
backend for a short answer (greedy), and cleans it (:func:`clean_answer`). It returns Haystack
``GeneratedAnswer`` objects, which hopstack's evaluation scores with EM, F1 and Acc; each carries the
documents the reader saw and, in ``meta``, the raw LLM text, the reader's confidence (the mean probability of
the tokens it generated) and the ids of the documents that contain the answer (its supporting documents or
clues). The prompt wording is ours.
"""

import re
from typing import Any

import numpy as np
from haystack import Document, component
from haystack.dataclasses import GeneratedAnswer

from hopstack.core.batch import BatchComponent
from hopstack.core.outputs import supporting_ids
from hopstack.core.text import numbered_passages, prompt_passages
from hopstack.models.cache import LLMUser

READER_SYSTEM = (
    "You answer questions using only the given documents. Reply with the answer alone: a name, a few words, "
    "a number or date, or Yes or No. Do not explain."
)
READER_FEW_SHOT = [
    {
        "documents": [
            "Brannock Looms. Ada Brannock founded the Brannock Looms mill in 1820 in the northern valley.",
            "Weaving. A loom is a device used to weave cloth.",
        ],
        "question": "Who founded the Brannock Looms mill?",
        "answer": "Ada Brannock",
    },
    {
        "documents": [
            "Tech Daily. On 3 May, Orbit announced a new phone with a larger battery.",
            "Market Watch. Orbit's new phone has a larger battery, the company said on 3 May.",
        ],
        "question": "Do both Tech Daily and Market Watch report that Orbit's new phone has a larger battery?",
        "answer": "Yes",
    },
]
ANSWER_PREFIX = re.compile(r"^\s*(?:final\s+)?answer\s*[:\-]\s*", re.IGNORECASE)
YES_NO = re.compile(r"^(yes|no)\b", re.IGNORECASE)


def clean_answer(text: str) -> str:
    """The short answer in an LLM's reply: its first non-empty line, without an "Answer:" prefix, wrapping
    quotes or asterisks and a final full stop; a reply that starts with yes or no becomes "Yes" / "No"."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = ANSWER_PREFIX.sub("", line).strip().strip("*\"'`").strip()
    yes_no = YES_NO.match(line)
    if yes_no:
        return yes_no.group(1).capitalize()
    return line[:-1].rstrip() if line.endswith(".") else line


@component
class AnswerGenerator(LLMUser, BatchComponent):
    """The reader: a short answer to the question from its documents, with any LLM backend.

    :param llm: an LLM spec (:func:`hopstack.models.llm.make_llm`).
    :param max_documents: documents read, in their order (REBEL's experiments: 3).
    :param max_passage_words: words kept of each document.
    :param max_tokens: answer length budget.
    :param system_prompt: the system message.
    :param few_shot: worked examples ``{"documents", "question", "answer"}``, given as chat turns.
    :param title_prefix: documents are ``"title. text"`` when they have a title.
    :param cache: use the on-disk call cache (``HOPSTACK_CACHE=off`` overrides).
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        max_documents: int = 5,
        max_passage_words: int = 200,
        max_tokens: int = 32,
        system_prompt: str = READER_SYSTEM,
        few_shot: list[dict[str, Any]] | None = None,
        title_prefix: bool = True,
        cache: bool = True,
    ):
        if min(max_documents, max_passage_words, max_tokens) < 1:
            raise ValueError("max_documents, max_passage_words and max_tokens must be at least 1")
        for number, example in enumerate(READER_FEW_SHOT if few_shot is None else few_shot):
            if not isinstance(example, dict) or not {"documents", "question", "answer"} <= set(example):
                raise ValueError(f"few_shot[{number}] must be a mapping with 'documents', 'question' and 'answer'")
        self.use_llm(llm, cache)
        self.max_documents = max_documents
        self.max_passage_words = max_passage_words
        self.max_tokens = max_tokens
        self.system_prompt = system_prompt
        self.few_shot = READER_FEW_SHOT if few_shot is None else few_shot
        self.title_prefix = title_prefix

    @component.output_types(answers=list[GeneratedAnswer])
    def run(self, query: str, documents: list[Document]) -> dict[str, Any]:
        """Answer one question."""
        return self.run_single(query=query, documents=documents)

    def run_batch(self, query: list[str], documents: list[list[Document]]) -> dict[str, list[Any]]:
        """Answer a batch of questions: every prompt in one LLM call."""
        return {"answers": [[answer] for answer in self.answer(query, documents)]}

    def answer(self, query: list[str], documents: list[list[Document]]) -> list[GeneratedAnswer]:
        """One answer per question from its first ``max_documents`` documents (one LLM call, greedy).

        ``meta["confidence"]`` is the mean probability of the tokens the LLM generated."""
        self.warm_up()
        read = [docs[: self.max_documents] for docs in documents]
        prompts = [
            self.messages(q, prompt_passages(docs, self.title_prefix, self.max_passage_words))
            for q, docs in zip(query, read)
        ]
        answers = []
        for q, docs, (reply, log_probs) in zip(query, read, self._llm.generate_scored(prompts, self.max_tokens)):
            text = clean_answer(reply)
            meta = {
                "raw": reply,
                "confidence": float(np.mean(np.exp(log_probs))) if log_probs else 0.0,
                "supporting_documents": supporting_ids(text, docs),
            }
            answers.append(GeneratedAnswer(data=text, query=q, documents=docs, meta=meta))
        return answers

    def messages(self, question: str, passages: list[str]) -> list[dict[str, str]]:
        """The chat for one question: system, the few-shot turns, the documents and the question."""
        messages = [{"role": "system", "content": self.system_prompt}]
        for example in self.few_shot:
            messages.append({"role": "user", "content": _user_turn(example["question"], example["documents"])})
            messages.append({"role": "assistant", "content": example["answer"]})
        messages.append({"role": "user", "content": _user_turn(question, passages)})
        return messages


def _user_turn(question: str, passages: list[str]) -> str:
    listed = numbered_passages(passages, "(no documents)")
    return f"Documents:\n{listed}\n\nQuestion: {question}\nAnswer:"
