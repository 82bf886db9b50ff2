"""Rerankers that show the LLM a few candidates at a time (docs/methods/rerankers.md#grouprank and setwise ranking).

- :class:`GroupwiseReranker`: GroupRank (Sun et al. 2025): candidates shuffled into groups, every
  document of a group scored 0-10 with the whole group in view, the shuffle repeated and the scores
  averaged, then fused with the first-stage score (0.6 / 0.4).
- :class:`SetwiseReranker`: setwise ranking (Zhuang et al., SIGIR 2024): a heap sort whose comparisons
  ask "which of these passages is the most relevant?" of a parent and its children, read from the
  labels' log-probabilities in one forward pass, until the top ``k`` are out.

Both batch across questions: every prompt of a step, for every question of the batch, goes to the LLM
in one call.
"""

import re
from collections.abc import Generator
from typing import Any

import numpy as np
from haystack import Document, component

from hopstack.components.rerankers import TracedReranker
from hopstack.core.ranking import candidate_top_ks, in_order, min_max, reorder
from hopstack.core.text import prompt_passages
from hopstack.models.cache import LLMUser
from hopstack.models.scorers import expected_grades

# GroupRank's evaluation instructions as docs/methods/rerankers.md#grouprank describes them (usefulness first,
# relevance second, 0-10 with anchors at 9-10 / 7-8 / 5-6 / 3-4 / 1-2 / 0); the wording is ours, the original was
# not read.
GROUP_SYSTEM = (
    "You are an expert relevance assessor. Evaluate how well each document helps answer the query: "
    "usefulness for answering it comes first, topical relevance second. Score each document from 0 to 10: "
    "9-10 = answers the query directly and completely; 7-8 = gives most of what is needed; 5-6 = partly "
    "useful, clearly related; 3-4 = related topic, little of the answer; 1-2 = barely related; 0 = unrelated. "
    "Compare the documents with each other so that the scores are consistent across the group."
)
GROUP_PROMPT = "Query: {query}\n\nDocuments:\n{documents}\n\n"
GROUP_ANSWER_JSON = (
    'Score every document. Answer only with <answer>```json {{"[1]": score, "[2]": score, ...}}```</answer>.'
)
GROUP_ANSWER_ONE = "What is the score of document [{i}]? Answer with the number only."
SCORE_MODES = ("logits", "generate")
GROUP_PAIR = re.compile(r'"?\[?(\d+)\]?"?\s*:\s*(-?\d+(?:\.\d+)?)')


def parse_group_scores(text: str, n: int) -> tuple[dict[int, float], dict[str, int]]:
    """The ``"[i]": score`` pairs of a GroupRank answer for a group of ``n``: 0-based position -> score
    clipped to 0-10, from the ``<answer>`` part when there is one; with the counts of ``out_of_range`` ids,
    ``repeated`` ids (the first score is kept) and ``missing`` documents."""
    answer = text.split("<answer>", 1)[-1]
    scores: dict[int, float] = {}
    counts = {"out_of_range": 0, "repeated": 0, "missing": 0}
    for match in GROUP_PAIR.finditer(answer):
        position = int(match.group(1)) - 1
        if not 0 <= position < n:
            counts["out_of_range"] += 1
        elif position in scores:
            counts["repeated"] += 1
        else:
            scores[position] = min(max(float(match.group(2)), 0.0), 10.0)
    counts["missing"] = n - len(scores)
    return scores, counts


@component
class GroupwiseReranker(LLMUser, TracedReranker):
    """GroupRank-style groupwise reranking (docs/methods/rerankers.md#grouprank), a small-model approximation of the 7B
    GroupRank model.

    Each question's candidates are shuffled (seeded by ``seed`` and the question) and cut into groups of
    ``group_size``; every document of a group gets a 0-10 score with the whole group in the prompt, the
    shuffle is repeated ``repeats`` times and a document's scores averaged, divided by 10, and fused:
    ``fusion_weight * group + (1 - fusion_weight) * first_stage`` (GroupRank: 0.6 / 0.4), the first-stage
    scores min-max scaled to 0-1 per question (the scaling is ours).

    ``score_mode: logits`` (the CPU variant of docs/methods/rerankers.md#grouprank) asks for each document of the
    group in turn and takes the expected grade over the grade tokens' probabilities: the prompts of a group share
    everything but their last line, which llama.cpp evaluates once. ``score_mode: generate`` is
    GroupRank's own output: one JSON answer per group, parsed robustly (:func:`parse_group_scores`); a
    document the answer leaves out gets no score from that repeat, and one left out of every repeat gets
    the question's mean group score (counted as ``missing``).

    :param llm: an LLM spec (:func:`hopstack.models.llm.make_llm`).
    :param group_size: documents per group (GroupRank: 20; on a CPU: 5).
    :param repeats: shuffles, each scoring every document once (GroupRank's script: 6, code default 2).
    :param fusion_weight: weight of the group score; the first-stage score gets the rest.
    :param score_mode: ``logits`` or ``generate``.
    :param temperature: ``generate`` mode's sampling temperature (GroupRank: 0.3; 0 = greedy).
    :param max_tokens: ``generate`` mode's answer length.
    :param max_passage_words: words kept of each passage.
    :param seed: the shuffles' seed.
    :param top_k: documents returned unless the ``top_k`` input overrides it.
    :param title_prefix: passages are ``"title. text"`` when a document has a title.
    :param cache: use the on-disk call cache (``HOPSTACK_CACHE=off`` overrides).

    Outputs ``documents`` and ``trace`` per question: ``llm_prompts``, and in ``generate`` mode the
    parse counts ``out_of_range``, ``repeated``, ``missing`` (document-repeats without a score) and
    ``unscored`` (documents without any score).
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        group_size: int = 5,
        repeats: int = 2,
        fusion_weight: float = 0.6,
        score_mode: str = "logits",
        temperature: float = 0.0,
        max_tokens: int = 96,
        max_passage_words: int = 100,
        seed: int = 0,
        top_k: int = 10,
        title_prefix: bool = True,
        cache: bool = True,
    ):
        if score_mode not in SCORE_MODES:
            raise ValueError(f"score_mode must be one of {', '.join(SCORE_MODES)}, got {score_mode!r}")
        if min(group_size, repeats, top_k, max_passage_words, max_tokens) < 1:
            raise ValueError("group_size, repeats, top_k, max_passage_words and max_tokens must be at least 1")
        if not 0.0 <= fusion_weight <= 1.0:
            raise ValueError(f"fusion_weight must be between 0 and 1, got {fusion_weight}")
        self.use_llm(llm, cache)
        self.group_size = group_size
        self.repeats = repeats
        self.fusion_weight = fusion_weight
        self.score_mode = score_mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.max_passage_words = max_passage_words
        self.seed = seed
        self.top_k = top_k
        self.title_prefix = title_prefix

    def run_batch(
        self, query: list[str], documents: list[list[Document]], top_k: list[int | None] | None = None
    ) -> dict[str, list[Any]]:
        """Rerank a batch: every group of every repeat of every question in one LLM call."""
        self.warm_up()
        ks = candidate_top_ks(query, documents, top_k, self.top_k)
        groups = [(i, group) for i, (q, ds) in enumerate(zip(query, documents)) for group in self.groups(q, len(ds))]
        texts = [prompt_passages(ds, self.title_prefix, self.max_passage_words) for ds in documents]
        score = self._scores_by_logits if self.score_mode == "logits" else self._scores_by_generation
        sums = [np.zeros(len(docs)) for docs in documents]
        counts = [np.zeros(len(docs)) for docs in documents]
        traces = [{"llm_prompts": 0} for _ in query]
        group_scores = score([(query[i], [texts[i][j] for j in group]) for i, group in groups])
        for (i, group), (scores, prompts, parse_counts) in zip(groups, group_scores):
            traces[i]["llm_prompts"] += prompts
            for name, value in parse_counts.items():
                traces[i][name] = traces[i].get(name, 0) + value
            for position, value in scores.items():
                sums[i][group[position]] += value
                counts[i][group[position]] += 1
        reranked = []
        for docs, k, total, seen, trace in zip(documents, ks, sums, counts, traces):
            group = np.divide(total, seen, out=np.zeros_like(total), where=seen > 0)
            if self.score_mode == "generate":
                trace["unscored"] = int((seen == 0).sum())
                if seen.any():
                    group[seen == 0] = group[seen > 0].mean()
            first_stage = min_max(np.array([d.score if d.score is not None else 0.0 for d in docs]))
            fused = self.fusion_weight * group / 10.0 + (1.0 - self.fusion_weight) * first_stage
            reranked.append(reorder(docs, fused, k))
        return {"documents": reranked, "trace": traces}

    def groups(self, query: str, n: int) -> list[list[int]]:
        """The groups of candidate positions, ``repeats`` shuffles of ``0..n-1`` cut into ``group_size``
        pieces; the shuffles depend only on ``seed``, the question and ``n``."""
        rng = np.random.default_rng([self.seed, n, *query.encode("utf-8")])
        groups = []
        for _ in range(self.repeats if n else 0):
            order = rng.permutation(n).tolist()
            groups.extend(order[start : start + self.group_size] for start in range(0, n, self.group_size))
        return groups

    def _messages(self, query: str, passages: list[str], ask: str) -> list[dict[str, str]]:
        listed = "\n".join(f"[{j}]. {p}" for j, p in enumerate(passages, 1))
        user = GROUP_PROMPT.format(query=query, documents=listed) + ask
        return [{"role": "system", "content": GROUP_SYSTEM}, {"role": "user", "content": user}]

    def _scores_by_logits(self, groups: list[tuple[str, list[str]]]) -> list[tuple[dict[int, float], int, dict]]:
        """Every document of every group: the expected 0-10 grade, one prompt each (all in one call)."""
        prompts = [
            self._messages(q, passages, GROUP_ANSWER_ONE.format(i=j)) for q, passages in groups
            for j in range(1, len(passages) + 1)
        ]  # fmt: skip
        grades = [str(g) for g in range(11)]
        log_probs = np.asarray(self._llm.score(prompts, grades), dtype=np.float64).reshape(len(prompts), len(grades))
        values = expected_grades(np.exp(log_probs), grades)
        results, offset = [], 0
        for _, passages in groups:
            results.append(({j: float(values[offset + j]) for j in range(len(passages))}, len(passages), {}))
            offset += len(passages)
        return results

    def _scores_by_generation(self, groups: list[tuple[str, list[str]]]) -> list[tuple[dict[int, float], int, dict]]:
        """One JSON answer per group (all in one call), parsed with :func:`parse_group_scores`."""
        prompts = [self._messages(q, passages, GROUP_ANSWER_JSON) for q, passages in groups]
        answers = self._llm.generate(prompts, max_tokens=self.max_tokens, temperature=self.temperature)
        results = []
        for answer, (_, passages) in zip(answers, groups):
            scores, counts = parse_group_scores(answer, len(passages))
            results.append((scores, 1, counts))
        return results


SETWISE_PROMPT = (
    'Given a query "{query}", which of the following passages is the most relevant one to the query?\n\n'
    "{passages}\n\nOutput only the passage label of the most relevant passage:"
)

Comparisons = Generator[list[int], int, list[int]]


def heap_top_k(n: int, k: int, num_child: int) -> Comparisons:
    """Setwise heap sort of candidates ``0..n-1`` as a coroutine: it yields a set of candidates (a heap
    parent first, then its children) and is sent back the position in that set of the best one; it
    returns the ``k`` best, best first, followed by the rest in the order the heap left them."""
    heap = list(range(n))

    def sift_down(node: int, size: int) -> Comparisons:
        while True:
            children = [c for c in range(num_child * node + 1, num_child * node + num_child + 1) if c < size]
            if not children:
                return []
            best = yield [heap[node], *(heap[c] for c in children)]
            if best == 0:
                return []
            child = children[best - 1]
            heap[node], heap[child] = heap[child], heap[node]
            node = child

    for node in reversed(range((n - 2) // num_child + 1 if n > 1 else 0)):
        yield from sift_down(node, n)
    top = []
    for size in range(n, max(n - k, 0), -1):
        top.append(heap[0])
        heap[0], heap[size - 1] = heap[size - 1], heap[0]
        yield from sift_down(0, size - 1)
    return top + [c for c in heap[: n - len(top)]]


@component
class SetwiseReranker(LLMUser, TracedReranker):
    """Setwise reranking (Zhuang et al., SIGIR 2024) by heap sort, a zero-shot small-model run of it.

    A max-heap of the candidates with ``num_child`` children per node; each comparison shows the LLM a
    parent and its children labelled A, B, C, ... and reads the log-probabilities of the labels in one
    forward pass (no generation, so every answer is a valid label), the most probable label winning.
    Building the heap and popping the top ``k`` costs about ``n / num_child + k * log_{num_child}(n)``
    prompts a question; the comparisons at one step of every question of a batch go in one LLM call.
    Returned documents carry ``n - rank`` as their score; below the top ``k`` the heap's order is kept.

    :param llm: an LLM spec (:func:`hopstack.models.llm.make_llm`).
    :param num_child: children per heap node (the paper's default: 3, so sets of 4).
    :param max_passage_words: words kept of each passage.
    :param top_k: documents returned (and sorted) unless the ``top_k`` input overrides it.
    :param title_prefix: passages are ``"title. text"`` when a document has a title.
    :param cache: use the on-disk call cache (``HOPSTACK_CACHE=off`` overrides).

    Outputs ``documents`` and ``trace`` per question: ``llm_prompts`` (the comparisons made).
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        num_child: int = 3,
        max_passage_words: int = 100,
        top_k: int = 10,
        title_prefix: bool = True,
        cache: bool = True,
    ):
        if not 1 <= num_child <= 25:
            raise ValueError(f"num_child must be between 1 and 25 (one letter per passage), got {num_child}")
        if top_k < 1 or max_passage_words < 1:
            raise ValueError(f"top_k and max_passage_words must be at least 1, got {top_k} and {max_passage_words}")
        self.use_llm(llm, cache)
        self.num_child = num_child
        self.max_passage_words = max_passage_words
        self.top_k = top_k
        self.title_prefix = title_prefix

    def run_batch(
        self, query: list[str], documents: list[list[Document]], top_k: list[int | None] | None = None
    ) -> dict[str, list[Any]]:
        """Rerank a batch: the heap sorts of all questions advance together, one LLM call a step."""
        self.warm_up()
        ks = candidate_top_ks(query, documents, top_k, self.top_k)
        texts = [prompt_passages(ds, self.title_prefix, self.max_passage_words) for ds in documents]
        sorts = [heap_top_k(len(docs), k, self.num_child) for docs, k in zip(documents, ks)]
        orders: list[list[int] | None] = [None] * len(query)
        asked: dict[int, list[int]] = {}
        prompts_made = [0] * len(query)

        def advance(i: int, answer: int | None) -> None:
            try:
                asked[i] = sorts[i].send(answer)
            except StopIteration as done:
                asked.pop(i, None)
                orders[i] = done.value

        for i in range(len(query)):
            advance(i, None)
        while asked:
            jobs = list(asked.items())
            prompts = [self._prompt(query[i], [texts[i][c] for c in members]) for i, members in jobs]
            labels = [chr(ord("A") + j) for j in range(max(len(m) for _, m in jobs))]
            log_probs = self._llm.score(prompts, labels)
            for (i, members), row in zip(jobs, log_probs):
                prompts_made[i] += 1
                advance(i, int(np.argmax(np.asarray(row[: len(members)], dtype=np.float64))))
        reranked = [in_order(docs, order, k) for docs, order, k in zip(documents, orders, ks)]
        return {"documents": reranked, "trace": [{"llm_prompts": n} for n in prompts_made]}

    def _prompt(self, query: str, passages: list[str]) -> list[dict[str, str]]:
        listed = "\n\n".join(f'Passage {chr(ord("A") + j)}: "{p}"' for j, p in enumerate(passages))
        return [{"role": "user", "content": SETWISE_PROMPT.format(query=query, passages=listed)}]
