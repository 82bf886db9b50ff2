"""Question decomposition and multi-query retrieval (Ammann, Golde & Akbik, ACL SRW 2025;
docs/methods/decomposition.md).

An LLM rewrites a complex question into at most ``max_sub_questions`` simpler, self-contained sub-questions;
the original question is always kept first, so retrieval runs for ``[question, *sub_questions]``. The
paper's prompt was not published: the prompt here is this project's
(docs/methods/decomposition.md#what-hopstack-implements), and its
few-shot examples, written for hopstack, are given as separate chat turns (small models follow them best
that way). Decoding is greedy by default, so decompositions are deterministic and cacheable; the paper
sampled at temperature 0.8, top-p 0.8 with Qwen2.5-32B. With the 0.5B model that runs on a CPU here this is
a "QD-style (small-model approximation)", not a reproduction.

Parsing (section 4.4): one sub-question per line; bullets and numbering stripped; duplicates
(case-folded) and copies of the original question dropped; at most ``max_sub_questions`` kept. An answer
with no usable line falls back to the original question alone, and says so in ``decomposition``.
"""

import re
from typing import Any

from haystack import Document, component

from hopstack.components.base import WrapsRetriever
from hopstack.core.batch import BatchComponent, call_batch
from hopstack.models.cache import LLMUser

SYSTEM_PROMPT = (
    "You break a complex question into simpler, self-contained, fact-seeking sub-questions for a search engine."
)
USER_TEMPLATE = (
    "Question: {question}\n"
    "Write at most {n} sub-questions (one per line, no numbering, no answers). Each must be answerable from a "
    "single document and must repeat the entities it refers to."
)
# Written for hopstack (the paper's prompt and examples are not public).
FEW_SHOT = [
    {
        "question": "Which company that makes the Model Y also owns a battery plant in Nevada?",
        "sub_questions": [
            "Which company makes the Model Y?",
            "Which companies own a battery plant in Nevada?",
        ],
    },
    {
        "question": "Did the director of Jaws win an Oscar before the release of Jurassic Park?",
        "sub_questions": [
            "Who directed Jaws?",
            "Which Oscars has the director of Jaws won, and when?",
            "When was Jurassic Park released?",
        ],
    },
]

_LIST_MARKER = re.compile(r"^\s*(?:[-*•·]+|\(?\d+[.):]|\(?[a-z][.)]|q\d+[.:)]|sub-?question\s*\d*[.:)])\s*", re.I)


def _folded(text: str) -> str:
    return re.sub(r"[\s?.!]+$", "", " ".join(text.split())).casefold()


def parse_sub_questions(text: str, question: str, max_sub_questions: int) -> list[str]:
    """The usable sub-questions in an LLM's answer: one a line, list markers stripped, blank lines,
    repeats (case-folded) and copies of ``question`` dropped, at most ``max_sub_questions``."""
    seen = {_folded(question)}
    parsed: list[str] = []
    for line in text.splitlines():
        candidate, previous = line, None
        while candidate != previous:  # "- 1. ..." carries two markers
            previous, candidate = candidate, _LIST_MARKER.sub("", candidate, count=1)
        candidate = candidate.strip().strip('"').strip()
        key = _folded(candidate)
        if not key or key in seen:
            continue
        seen.add(key)
        parsed.append(candidate)
        if len(parsed) == max_sub_questions:
            break
    return parsed


@component
class QuestionDecomposer(LLMUser, BatchComponent):
    """Sub-questions of a question from an LLM; ``queries`` is the original question followed by them.

    :param llm: the LLM (see :func:`hopstack.models.llm.make_llm`): a registry name, GGUF path, Hugging
        Face id, or ``{type: llama.cpp | transformers | openai, init_parameters}``; default the CPU model
        ``qwen2.5-0.5b`` through llama.cpp.
    :param max_sub_questions: at most this many sub-questions (the paper: 5).
    :param few_shot: examples ``{"question", "sub_questions"}`` given as chat turns before the question.
    :param system_prompt: the system message.
    :param user_template: the user message, with ``{question}`` and ``{n}``.
    :param max_tokens: generation budget per question.
    :param temperature: 0 is greedy (deterministic); the paper used 0.8.
    :param cache: keep decompositions in the on-disk call cache, keyed by the question (and all of the
        above), so repeated runs make no LLM call (``HOPSTACK_CACHE=off`` overrides).
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        max_sub_questions: int = 5,
        few_shot: list[dict[str, Any]] | None = None,
        system_prompt: str = SYSTEM_PROMPT,
        user_template: str = USER_TEMPLATE,
        max_tokens: int = 160,
        temperature: float = 0.0,
        cache: bool = True,
    ):
        if max_sub_questions < 0:
            raise ValueError(f"max_sub_questions must be at least 0, got {max_sub_questions}")
        for number, example in enumerate(FEW_SHOT if few_shot is None else few_shot):
            if not isinstance(example, dict) or not {"question", "sub_questions"} <= set(example):
                raise ValueError(f"few_shot[{number}] must be a mapping with 'question' and 'sub_questions'")
        self.use_llm(llm, cache)
        self.max_sub_questions = max_sub_questions
        self.few_shot = FEW_SHOT if few_shot is None else few_shot
        self.system_prompt = system_prompt
        self.user_template = user_template
        self.max_tokens = max_tokens
        self.temperature = temperature

    def messages(self, question: str) -> list[dict[str, str]]:
        """The chat sent for one question: system, few-shot turns, the question."""
        messages = [{"role": "system", "content": self.system_prompt}]
        for example in self.few_shot:
            messages.append({"role": "user", "content": self._user(example["question"])})
            messages.append({"role": "assistant", "content": "\n".join(example["sub_questions"])})
        messages.append({"role": "user", "content": self._user(question)})
        return messages

    def _user(self, question: str) -> str:
        return self.user_template.format(question=question, n=self.max_sub_questions)

    @component.output_types(queries=list[str], sub_questions=list[str], decomposition=dict[str, Any])
    def run(self, question: str) -> dict[str, Any]:
        """Decompose one question."""
        return self.run_single(question=question)

    def run_batch(self, question: list[str]) -> dict[str, list[Any]]:
        """Decompose every question with one batched LLM call."""
        if self.max_sub_questions == 0:
            answers = [""] * len(question)
        else:
            self.warm_up()
            answers = self._llm.generate(
                [self.messages(q) for q in question], max_tokens=self.max_tokens, temperature=self.temperature
            )
        sub_questions = [parse_sub_questions(a, q, self.max_sub_questions) for a, q in zip(answers, question)]
        return {
            "queries": [[q, *subs] for q, subs in zip(question, sub_questions)],
            "sub_questions": sub_questions,
            "decomposition": [
                {"llm_answer": a, "sub_questions": len(subs), "fallback": not subs}
                for a, subs in zip(answers, sub_questions)
            ],
        }


@component
class MultiQueryRetriever(WrapsRetriever, BatchComponent):
    """Retrieves for every query of a question (its original and its sub-questions) and pools the results.

    All queries of all questions in a batch go to the wrapped retriever in one ``run_batch`` call. Per
    question, the pool is the union of the per-query top-k, de-duplicated by document id (a document keeps
    its best score), sorted by that score: the paper's "+QD" variant. Reranking the pool against the
    original question is a reranker's job, downstream.

    :param retriever: the wrapped retriever as ``{"type", "init_parameters"}`` (any retriever with a
        ``query`` input and a ``documents`` output, e.g. BM25Retriever or DenseRetriever).
    :param top_k: the most documents in a question's pool (None: all of them).
    :param index: when set, the wrapped retriever's ``index`` (so ``--index`` reaches it).
    """

    def __init__(self, retriever: dict[str, Any], top_k: int | None = None, index: str | None = None):
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1 or null, got {top_k}")
        self.use_retriever(retriever, index)
        self.top_k = top_k

    def warm_up(self) -> None:
        """Warm up the wrapped retriever."""
        if callable(getattr(self._retriever, "warm_up", None)):
            self._retriever.warm_up()

    @component.output_types(documents=list[Document])
    def run(self, queries: list[str], top_k: int | None = None) -> dict[str, Any]:
        """Retrieve for each of one question's queries and pool the results."""
        return self.run_single(queries=queries, top_k=top_k)

    def run_batch(self, queries: list[list[str]], top_k: list[int | None] | None = None) -> dict[str, list[Any]]:
        """One wrapped-retriever call for every query of every question, then one pool per question."""
        self.warm_up()
        flat = [query for question_queries in queries for query in question_queries]
        results = call_batch(self._retriever, query=flat)["documents"] if flat else []
        pools, start = [], 0
        for i, question_queries in enumerate(queries):
            limit = self.top_k if top_k is None or top_k[i] is None else top_k[i]
            pools.append(_pool(results[start : start + len(question_queries)], limit))
            start += len(question_queries)
        return {"documents": pools}


def _pool(ranked_lists: list[list[Document]], top_k: int | None) -> list[Document]:
    """The union of ranked lists by document id, each document with its best score, best first (ties keep
    the order of first appearance)."""
    best: dict[str, Document] = {}
    for documents in ranked_lists:
        for document in documents:
            kept = best.get(document.id)
            if kept is None or (document.score or 0.0) > (kept.score or 0.0):
                best[document.id] = document
    pooled = sorted(best.values(), key=lambda d: -(d.score or 0.0))
    return pooled if top_k is None else pooled[:top_k]
