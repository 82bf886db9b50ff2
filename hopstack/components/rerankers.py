"""Reranking stages: reorder each question's candidate documents (docs/methods/rebel.md and docs/methods/rerankers.md).

- :class:`PointwiseReranker`: every (question, candidate) pair scored on its own by a scorer
  (:mod:`hopstack.models.scorers`): a cross-encoder, an LLM's P("Yes") that the passage is relevant
  (ProRank / Qwen3-Reranker style), or an LLM's expected 0-10 grade over the grade tokens'
  probabilities (ERank style).
- :class:`ListwiseReranker`: FIRST-style single-token listwise reranking over sliding windows, with
  InsertRank's first-stage scores in the prompt as an option.
- :class:`EmbeddingListwiseReranker`: E2Rank style, candidates by cosine to the embedding of a
  listwise pseudo-query (the question and its top candidates).

A reranker takes ``query`` (the original question) and ``documents`` (the first stage's candidates)
and returns ``documents``: the candidates re-scored by the reranker, best first, ties in first-stage
order, at most ``top_k``. Every candidate of every question of a batch goes to the scorer in one call.
"""

from typing import Any

import numpy as np
from haystack import Document, component

from hopstack.core.batch import BatchComponent
from hopstack.core.ranking import candidate_top_ks, in_order, interpolate, min_max, reorder_each
from hopstack.core.text import first_words, passage_text, prompt_passages
from hopstack.models.cache import LLMUser
from hopstack.models.scorers import ScorerUser, make_scorer, score_all


class Reranker(BatchComponent):
    """The reranker contract: ``run(query, documents, top_k)`` -> ``documents``, implemented by the
    subclass's ``run_batch``."""

    reranks = True  # the Reranker role (hopstack.core.roles)

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, Any]:
        """Rerank one question's candidates."""
        return self.run_single(query=query, documents=documents, top_k=top_k)


class TracedReranker(Reranker):
    """A reranker that also says, per question, what it did: ``trace`` (LLM prompts made, parse failures,
    fallbacks taken)."""

    @component.output_types(documents=list[Document], trace=dict[str, Any])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, Any]:
        """Rerank one question's candidates."""
        return self.run_single(query=query, documents=documents, top_k=top_k)


@component
class PointwiseReranker(ScorerUser, Reranker):
    """Rerank candidates by a pointwise relevance scorer, each (question, passage) pair on its own.

    :param scorer: a scorer, a nested spec (:func:`hopstack.models.scorers.make_scorer`):
        ``{type: cross-encoder, init_parameters: {model: BAAI/bge-reranker-base}}`` (any Hugging Face
        cross-encoder), ``{type: llm, init_parameters: {llm: qwen2.5-0.5b}}`` (log P(Yes) - log P(No) of a
        relevance prompt: the ranking of P("Yes")), ``{type: llm-graded, init_parameters: {llm: qwen2.5-0.5b,
        scale: 10}}`` (the expected 0-10 grade), or ``{type: bi-encoder, init_parameters: {model: minilm}}``
        (cosine; a stand-in, not a reranker).
    :param top_k: documents returned unless the ``top_k`` input overrides it.
    :param title_prefix: passages are ``"title. text"`` when a document has a title.
    :param device: ``auto | cpu | cuda | cuda:N`` for an encoder scorer (an LLM's is in its spec).
    :param first_stage_weight: 0 (the default) orders by the scorer alone (its raw scores); ``w`` in (0, 1]
        orders each question's candidates by ``w * min_max(first-stage score) + (1 - w) * min_max(scorer
        score)`` (:func:`hopstack.core.ranking.interpolate`), keeping the first stage's signal; ``hopstack
        train reranker`` fits ``w`` on the train split (docs/methods/trained-reranker.md).
    """

    first_stage_weight = 0.0  # what subclasses that do not take the parameter use

    def __init__(
        self,
        scorer: dict[str, Any],
        top_k: int = 10,
        title_prefix: bool = True,
        device: str = "auto",
        first_stage_weight: float = 0.0,
    ):
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if not 0.0 <= first_stage_weight <= 1.0:
            raise ValueError(f"first_stage_weight must be between 0 and 1, got {first_stage_weight}")
        self.use_scorer(scorer, device)
        self.top_k = top_k
        self.title_prefix = title_prefix
        self.first_stage_weight = first_stage_weight

    def run_batch(
        self, query: list[str], documents: list[list[Document]], top_k: list[int | None] | None = None
    ) -> dict[str, list[Any]]:
        """Rerank a batch: all (question, candidate) pairs of the batch in one scorer call."""
        ks = candidate_top_ks(query, documents, top_k, self.top_k)
        scores = score_all(self._scorer, self._pairs(query, documents), type(self).__name__)
        if self.first_stage_weight > 0:
            scores = self._interpolated(documents, scores)
        return {"documents": reorder_each(documents, scores, ks)}

    def _interpolated(self, documents: list[list[Document]], scores: np.ndarray) -> np.ndarray:
        """Each question's scores interpolated with its candidates' first-stage scores."""
        mixed, offset = [], 0
        for candidates in documents:
            unscored = [d.id for d in candidates if d.score is None]
            if unscored:
                raise ValueError(
                    f"{type(self).__name__}: first_stage_weight needs the candidates' first-stage scores; "
                    f"document {unscored[0]!r} has none"
                )
            first = np.array([d.score for d in candidates], dtype=np.float64)
            mixed.append(interpolate(first, scores[offset : offset + len(candidates)], self.first_stage_weight))
            offset += len(candidates)
        return np.concatenate(mixed) if mixed else np.zeros(0)

    def _pairs(self, query: list[str], documents: list[list[Document]]) -> list[tuple[str, str]]:
        """The (text, passage) pairs the scorer scores, one per candidate of the batch, in order."""
        return [(q, passage_text(d, self.title_prefix)) for q, candidates in zip(query, documents) for d in candidates]


LISTWISE_SYSTEM = (
    "You are RankGPT, an intelligent assistant that can rank passages based on their relevancy to the query."
)
LISTWISE_PROMPT = (
    "I will provide you with {n} passages, each indicated by an alphabetical identifier []. "
    "Rank the passages based on their relevance to the search query: {query}.\n\n"
    "{passages}\n\n"
    "Search Query: {query}.\n"
    "Rank the {n} passages above based on their relevance to the search query. All the passages should be "
    "included and listed using identifiers, in descending order of relevance. The output format should be "
    "[] > [], e.g., [A] > [B]. Only respond with the ranking results, do not say any word or explain."
)
INSERTED_SCORES = ("raw", "minmax")


@component
class ListwiseReranker(LLMUser, Reranker):
    """Single-token listwise reranking (FIRST, Reddy et al. 2024; docs/methods/rerankers.md#listwise), optionally with
    the first-stage scores written into the prompt (InsertRank, docs/methods/rerankers.md#listwise).

    The candidates of a window are listed in a RankGPT-style prompt with the identifiers [A], [B], ...;
    the LLM's answer would start "[X"; the log-probability of each "[X" after the prompt is read in one
    forward pass (no generation) and the window is sorted by it. Every identifier gets a log-probability,
    so the result is always a permutation of the window: nothing can be dropped, repeated or unparsable.
    Windows of ``window`` candidates slide from the bottom of the list to the top in steps of ``step``
    (RankGPT's sliding window), so a strong candidate can climb from the last window to the first. The
    windows at one position are scored for every question of a batch in one LLM call. Returned documents
    carry ``n - rank`` as their score (n candidates, rank from 0).

    FIRST itself is a 7B model fine-tuned for this; a zero-shot small model is a FIRST-style
    approximation. FIRST's defaults are a window of 20, step 10, passages of 300 words; on a CPU use
    smaller windows and passages.

    :param llm: an LLM spec (:func:`hopstack.models.llm.make_llm`).
    :param window: candidates per prompt (at most 26).
    :param step: how far the window moves up each time (``window // 2`` when not given).
    :param max_passage_words: words kept of each passage.
    :param insert_scores: ``None``; ``"raw"`` writes each candidate's first-stage score after its identifier
        (InsertRank); ``"minmax"`` writes it min-max scaled to 0-100 over the question's candidates.
    :param top_k: documents returned unless the ``top_k`` input overrides it.
    :param title_prefix: passages are ``"title. text"`` when a document has a title.
    :param cache: use the on-disk call cache (``HOPSTACK_CACHE=off`` overrides).
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        window: int = 10,
        step: int | None = None,
        max_passage_words: int = 100,
        insert_scores: str | None = None,
        top_k: int = 10,
        title_prefix: bool = True,
        cache: bool = True,
    ):
        if not 2 <= window <= 26:
            raise ValueError(f"window must be between 2 and 26 (one letter per candidate), got {window}")
        if step is not None and not 1 <= step <= window:
            raise ValueError(f"step must be between 1 and the window ({window}), got {step}")
        if insert_scores not in (None, *INSERTED_SCORES):
            raise ValueError(f"insert_scores must be null, raw or minmax; got {insert_scores!r}")
        if top_k < 1 or max_passage_words < 1:
            raise ValueError(f"top_k and max_passage_words must be at least 1, got {top_k} and {max_passage_words}")
        self.use_llm(llm, cache)
        self.window = window
        self.step = step
        self.max_passage_words = max_passage_words
        self.insert_scores = insert_scores
        self.top_k = top_k
        self.title_prefix = title_prefix

    def run_batch(
        self, query: list[str], documents: list[list[Document]], top_k: list[int | None] | None = None
    ) -> dict[str, list[Any]]:
        """Rerank a batch: the windows at each position of every question's list in one LLM call."""
        self.warm_up()
        ks = candidate_top_ks(query, documents, top_k, self.top_k)
        labels = [self._label(candidates) for candidates in documents]
        orders = [list(range(len(candidates))) for candidates in documents]
        windows = [
            window_starts(len(candidates), self.window, self.step or max(1, self.window // 2))
            for candidates in documents
        ]
        for position in range(max((len(w) for w in windows), default=0)):
            jobs = [(i, w[position]) for i, w in enumerate(windows) if position < len(w)]
            prompts, sizes = [], []
            for i, start in jobs:
                members = orders[i][start : start + self.window]
                prompts.append(self._prompt(query[i], [labels[i][m] for m in members]))
                sizes.append(len(members))
            letters = [f"[{chr(ord('A') + j)}" for j in range(max(sizes))]
            log_probs = self._llm.score(prompts, letters)
            for (i, start), size, row in zip(jobs, sizes, log_probs):
                members = orders[i][start : start + size]
                ranked = np.argsort(-np.asarray(row[:size], dtype=np.float64), kind="stable")
                orders[i][start : start + size] = [members[j] for j in ranked.tolist()]
        return {"documents": [in_order(candidates, order, k) for candidates, order, k in zip(documents, orders, ks)]}

    def _label(self, candidates: list[Document]) -> list[str]:
        """Each candidate's passage as the prompt lists it (after its identifier)."""
        texts = prompt_passages(candidates, self.title_prefix, self.max_passage_words)
        if self.insert_scores is None:
            return texts
        scores = np.array([d.score if d.score is not None else 0.0 for d in candidates], dtype=np.float64)
        if self.insert_scores == "minmax" and len(scores):
            scores = 100 * min_max(scores, flat=1.0)
        return [f"(retrieval score: {s:.1f}) {t}" for s, t in zip(scores.tolist(), texts)]

    def _prompt(self, query: str, passages: list[str]) -> list[dict[str, str]]:
        listed = "\n".join(f"[{chr(ord('A') + j)}] {p}" for j, p in enumerate(passages))
        user = LISTWISE_PROMPT.format(n=len(passages), query=query, passages=listed)
        return [{"role": "system", "content": LISTWISE_SYSTEM}, {"role": "user", "content": user}]


def window_starts(n: int, window: int, step: int) -> list[int]:
    """Start positions of the sliding windows over ``n`` candidates, bottom of the list first, the last
    one at 0; one window (at 0) when the list fits."""
    if n <= window:
        return [0] if n > 1 else []
    starts = list(range(n - window, 0, -step))
    return [*starts, 0]


E2RANK_TASK = "Given a web search query and some relevant documents, rerank the documents that answer the query:"
QUERY_POSITIONS = ("last", "first")


@component
class EmbeddingListwiseReranker(PointwiseReranker):
    """E2Rank-style reranking (Liu et al. 2025; docs/methods/rerankers.md#e2rank): an embedding model as a listwise
    reranker.

    The question and its top ``pseudo_query_docs`` candidates make one listwise pseudo-query,
    ``"{task}\\nDocuments:\\n[1] d1\\n[2] d2 ...Search Query:{query}"``; every candidate is scored by the
    cosine between its embedding and the pseudo-query's (PRF in embedding space). E2Rank trains its
    0.6B-8B embedders for this; with an off-the-shelf embedder (MiniLM) it is an E2Rank-style
    approximation. MiniLM reads 256 word pieces, so put the query first (``query_position: first``) and
    feed back few, short passages, or the query is cut off the end.

    :param model: a sentence-transformers model (registry name, Hugging Face id or path).
    :param pseudo_query_docs: candidates written into the pseudo-query (E2Rank: 20).
    :param max_passage_words: words kept of each passage in the pseudo-query (E2Rank: 1024).
    :param query_position: ``last`` (E2Rank's layout) or ``first``.
    :param top_k: documents returned unless the ``top_k`` input overrides it.
    :param title_prefix: passages are ``"title. text"`` when a document has a title.
    :param device: ``auto | cpu | cuda | cuda:N``.
    :param cache: keep embeddings in the on-disk call cache (``HOPSTACK_CACHE=off`` overrides).
    """

    def __init__(
        self,
        model: str = "minilm",
        pseudo_query_docs: int = 20,
        max_passage_words: int = 1024,
        query_position: str = "last",
        top_k: int = 10,
        title_prefix: bool = True,
        device: str = "auto",
        cache: bool = True,
    ):
        if query_position not in QUERY_POSITIONS:
            raise ValueError(f"query_position must be last or first, got {query_position!r}")
        if pseudo_query_docs < 0 or top_k < 1 or max_passage_words < 1:
            raise ValueError("pseudo_query_docs must be >= 0, top_k and max_passage_words >= 1")
        self.model = model
        self.pseudo_query_docs = pseudo_query_docs
        self.max_passage_words = max_passage_words
        self.query_position = query_position
        self.top_k = top_k
        self.title_prefix = title_prefix
        self.device = device
        self.cache = cache
        self._scorer = make_scorer({"type": "bi-encoder", "init_parameters": {"model": model, "cache": cache}}, device)

    def _pairs(self, query: list[str], documents: list[list[Document]]) -> list[tuple[str, str]]:
        """(pseudo-query, passage) for every candidate of the batch: all embedded in one call."""
        pairs = []
        for q, candidates in zip(query, documents):
            passages = [passage_text(d, self.title_prefix) for d in candidates]
            pseudo_query = self.pseudo_query(q, passages[: self.pseudo_query_docs])
            pairs.extend((pseudo_query, p) for p in passages)
        return pairs

    def pseudo_query(self, query: str, passages: list[str]) -> str:
        """The listwise pseudo-query of ``query`` and its feedback ``passages``."""
        listed = "\n".join(f"[{i}] {first_words(p, self.max_passage_words)}" for i, p in enumerate(passages, 1))
        if self.query_position == "first":
            return f"Search Query:{query}\n{E2RANK_TASK}\nDocuments:\n{listed}"
        return f"{E2RANK_TASK}\nDocuments:\n{listed}Search Query:{query}"
