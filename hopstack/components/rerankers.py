"""Reranking stages: reorder each question's candidate documents (METHODS sections 1 and 6).

- :class:`PointwiseReranker`: every (question, candidate) pair scored on its own by a scorer
  (:mod:`hopstack.models.scorers`): a cross-encoder, an LLM's P("Yes") that the passage is relevant
  (ProRank / Qwen3-Reranker style), or an LLM's expected 0-10 grade over the grade tokens'
  probabilities (ERank style).

A reranker takes ``query`` (the original question) and ``documents`` (the first stage's candidates)
and returns ``documents``: the candidates re-scored by the reranker, best first, ties in first-stage
order, at most ``top_k``. Every candidate of every question of a batch goes to the scorer in one call.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np
from haystack import Document, component

from hopstack.components.base import BatchComponent, batch_size_of
from hopstack.components.retrieval import _top_ks, _with_score
from hopstack.index.store import indexed_text
from hopstack.models.scorers import make_scorer


def passage_text(document: Document, title_prefix: bool = True) -> str:
    """The text a reranker reads for a document: ``"title. text"`` with ``title_prefix`` and a title."""
    return indexed_text(document.meta.get("title", ""), document.content or "", title_prefix)


def reorder(candidates: Sequence[Document], scores: Sequence[float], k: int) -> list[Document]:
    """The ``k`` best candidates by ``scores``, each carrying its new score; ties keep input order."""
    values = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-values, kind="stable")[:k]
    return [_with_score(candidates[i], float(values[i])) for i in order.tolist()]


def score_all(scorer: Any, pairs: list[tuple[str, str]], owner: str) -> np.ndarray:
    """The scorer's scores of ``pairs`` (one call), checked to be one finite-or-not float per pair."""
    scores = np.asarray(scorer.score(pairs), dtype=np.float64)
    if scores.shape != (len(pairs),):
        raise RuntimeError(f"{owner}: its scorer gave {scores.shape} scores for {len(pairs)} pairs")
    return scores


@component
class PointwiseReranker(BatchComponent):
    """Rerank candidates by a pointwise relevance scorer, each (question, passage) pair on its own.

    :param scorer: a scorer spec (:func:`hopstack.models.scorers.make_scorer`):
        ``{"type": "cross-encoder", "model": "BAAI/bge-reranker-base"}`` (any Hugging Face cross-encoder),
        ``{"type": "llm", "llm": "qwen2.5-0.5b"}`` (log P(Yes) - log P(No) of a relevance prompt: the
        ranking of P("Yes")), ``{"type": "llm-graded", "llm": "qwen2.5-0.5b", "scale": 10}`` (the expected
        0-10 grade), or ``{"type": "bi-encoder", "model": "minilm"}`` (cosine; a stand-in, not a reranker).
    :param top_k: documents returned unless the ``top_k`` input overrides it.
    :param title_prefix: passages are ``"title. text"`` when a document has a title.
    :param device: ``auto | cpu | cuda | cuda:N`` for an encoder scorer (an LLM's is in its spec).
    """

    def __init__(self, scorer: dict[str, Any], top_k: int = 10, title_prefix: bool = True, device: str = "auto"):
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.scorer = scorer
        self.top_k = top_k
        self.title_prefix = title_prefix
        self.device = device
        self._scorer = make_scorer(scorer, device)  # light: checks the spec, loads nothing

    def warm_up(self) -> None:
        """Load the scorer's model."""
        self._scorer.warm_up()

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, Any]:
        """Rerank one question's candidates."""
        return self.run_single(query=query, documents=documents, top_k=top_k)

    def run_batch(
        self, query: list[str], documents: list[list[Document]], top_k: list[int | None] | None = None
    ) -> dict[str, list[Any]]:
        """Rerank a batch: all (question, candidate) pairs of the batch in one scorer call."""
        inputs = {"query": query, "documents": documents}
        ks = _top_ks(top_k, batch_size_of(inputs if top_k is None else {**inputs, "top_k": top_k}), self.top_k)
        pairs = [(q, passage_text(d, self.title_prefix)) for q, candidates in zip(query, documents) for d in candidates]
        scores = score_all(self._scorer, pairs, type(self).__name__)
        reranked, offset = [], 0
        for candidates, k in zip(documents, ks):
            reranked.append(reorder(candidates, scores[offset : offset + len(candidates)], k))
            offset += len(candidates)
        return {"documents": reranked}
