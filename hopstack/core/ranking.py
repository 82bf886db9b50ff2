"""Ranking helpers shared by retrievers, fusion and rerankers: scored copies of documents, min-max scaling,
per-question ``top_k`` values, top-k selection and reordering by scores."""

from collections.abc import Sequence

import numpy as np
from haystack import Document

from hopstack.core.batch import batch_size_of


def with_score(document: Document, score: float) -> Document:
    """A copy of a corpus document that carries ``score`` (and a meta dict of its own).

    The copy is made like ``copy.copy`` does, without Document's ``__init__``, which re-validates every
    field and costs several microseconds a document: at tens of thousands of results a batch that is
    most of a BM25 search.
    """
    clone = object.__new__(type(document))
    clone.__dict__.update(vars(document))
    clone.__dict__["meta"] = dict(document.meta)
    clone.__dict__["score"] = float(score)
    return clone


def top_ks(top_k: list[int | None] | None, n: int, default: int) -> list[int]:
    """Each of ``n`` questions' ``top_k``: ``default`` where not given; refuses values below 1."""
    values = [default] * n if top_k is None else [default if k is None else int(k) for k in top_k]
    if any(k < 1 for k in values):
        raise ValueError(f"top_k must be at least 1, got {min(values)}")
    return values


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``scores``, the column indices of the ``k`` highest scores, best first.

    Equal scores are ordered by column (corpus order). Which of several scores equal to the k-th one
    make the cut is left to numpy's ``argpartition``, which is deterministic for a given row, so a
    row gives the same result alone or inside a batch.
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k < n_cols:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        candidates.sort(axis=1)
    else:
        candidates = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    values = np.take_along_axis(scores, candidates, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)


def min_max(values: np.ndarray, flat: float = 0.0) -> np.ndarray:
    """``values`` scaled to [0, 1] by their min and max; all ``flat`` when they are all equal (or empty)."""
    values = np.asarray(values, dtype=np.float64)
    spread = values.max() - values.min() if len(values) else 0.0
    return (values - values.min()) / spread if spread > 0 else np.full_like(values, flat)


def interpolate(first_stage: np.ndarray, reranker: np.ndarray, first_stage_weight: float) -> np.ndarray:
    """``w * min_max(first_stage) + (1 - w) * min_max(reranker)`` with ``w = first_stage_weight``: one question's
    candidates scored by both stages on a common [0, 1] scale (a flat list scores 0)."""
    return first_stage_weight * min_max(first_stage) + (1 - first_stage_weight) * min_max(reranker)


def reorder(candidates: Sequence[Document], scores: Sequence[float], k: int) -> list[Document]:
    """The ``k`` best candidates by ``scores``, each carrying its new score; ties keep input order."""
    values = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-values, kind="stable")[:k]
    return [with_score(candidates[i], float(values[i])) for i in order.tolist()]


def in_order(candidates: Sequence[Document], order: Sequence[int], k: int) -> list[Document]:
    """The first ``k`` candidates of ``order`` (positions, best first), each scored ``n - rank``."""
    return [with_score(candidates[j], float(len(order) - rank)) for rank, j in enumerate(order[:k])]


def split_by_sizes(values: Sequence[float] | np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """``values`` (as float64) cut into consecutive slices of ``sizes``: one per question of a batch."""
    values = np.asarray(values, dtype=np.float64)
    return np.split(values, np.cumsum(sizes)[:-1]) if len(sizes) else []


def reorder_each(documents: list[list[Document]], scores: np.ndarray, ks: list[int]) -> list[list[Document]]:
    """Each question's candidates reordered by its slice of ``scores`` (the batch's candidates in order)."""
    reranked, offset = [], 0
    for candidates, k in zip(documents, ks):
        reranked.append(reorder(candidates, scores[offset : offset + len(candidates)], k))
        offset += len(candidates)
    return reranked


def candidate_top_ks(
    query: list[str], documents: list[list[Document]], top_k: list[int | None] | None, default: int
) -> list[int]:
    """Each question's ``top_k`` in a reranker's batch (``default`` where not given); checks the lengths."""
    inputs = {"query": query, "documents": documents}
    return top_ks(top_k, batch_size_of(inputs if top_k is None else {**inputs, "top_k": top_k}), default)
