"""Hybrid fusion of ranked lists (BM25, dense, ...) into one ranking.

Methods (``method``):

- ``rrf``: reciprocal rank fusion, score = sum_i w_i / (k + rank_i) (Cormack et al. 2009; k = 60).
- ``minmax``: each list's scores scaled to [0, 1] by its min and max, then a weighted sum.
- ``zscore``: each list's scores standardised (mean 0, standard deviation 1), then a weighted sum.
- ``dbsf``: distribution-based score fusion: each list scaled by [mean - 3 sd, mean + 3 sd] to [0, 1]
  (clipped), then a weighted sum.

For the score-based methods a document missing from a list gets that list's lowest normalised score
(0 for min-max and DBSF): it ranked below everything that list returned. Lists arrive on one variadic
socket in the order Haystack gives them (alphabetical by sender component name), and ``weights``
follow that order; equal weights when unset. Documents are matched by id; the fused document keeps the
first list's copy with the fused score.
"""

import math
from typing import Any

import numpy as np
from haystack import Document, component
from haystack.core.component.types import Variadic

from hopstack.core.batch import BatchComponent
from hopstack.core.ranking import min_max

FUSION_METHODS = ("rrf", "minmax", "zscore", "dbsf")


def _normalised(scores: np.ndarray, method: str) -> np.ndarray:
    if method == "minmax":
        return min_max(scores, flat=1.0)
    mean, std = scores.mean(), scores.std()
    if method == "zscore":
        return np.zeros_like(scores) if std == 0 else (scores - mean) / std
    # dbsf
    if std == 0:
        return np.ones_like(scores)
    return np.clip((scores - (mean - 3 * std)) / (6 * std), 0.0, 1.0)


@component
class DocumentFusion(BatchComponent):
    """Fuse several ranked document lists into one.

    :param method: rrf, minmax, zscore or dbsf.
    :param weights: one weight per incoming list, in sender-name order; None for equal weights.
    :param rrf_k: the k of reciprocal rank fusion.
    :param top_k: documents kept after fusion.
    """

    def __init__(self, method: str = "rrf", weights: list[float] | None = None, rrf_k: int = 60, top_k: int = 10):
        if method not in FUSION_METHODS:
            raise ValueError(f"method must be one of {', '.join(FUSION_METHODS)}; got {method!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        if rrf_k < 0:
            raise ValueError(f"rrf_k must be non-negative, got {rrf_k}")
        if weights is not None and (not weights or any(not math.isfinite(w) or w < 0 for w in weights)):
            raise ValueError(f"weights must be finite and non-negative, one per incoming list; got {weights}")
        self.method = method
        self.weights = weights
        self.rrf_k = rrf_k
        self.top_k = top_k

    def connection_problems(self, senders: dict[str, list[str]]) -> list[tuple[str, str]]:
        """What ``hopstack validate`` reports, as ``(parameter, message)``, about the lists connected to
        ``documents``: weights that are not one per list."""
        lists = senders.get("documents", [])
        if self.weights is not None and len(self.weights) != len(lists):
            message = (
                f"{len(self.weights)} weights for {len(lists)} ranked lists; give one per list, in the order "
                f"{', '.join(lists)} (senders sorted by name)"
            )
            return [("weights", message)]
        return []

    def fuse(self, lists: list[list[Document]], top_k: int | None = None) -> list[Document]:
        """Fuse one question's lists."""
        weights = self.weights if self.weights is not None else [1.0] * len(lists)
        if len(weights) != len(lists):
            raise ValueError(f"{len(weights)} weights for {len(lists)} ranked lists")
        first_copy: dict[str, Document] = {}
        for documents in lists:
            for document in documents:
                first_copy.setdefault(document.id, document)
        fused = dict.fromkeys(first_copy, 0.0)
        for documents, weight in zip(lists, weights):
            if self.method == "rrf":
                contributions = [1.0 / (self.rrf_k + rank) for rank in range(1, len(documents) + 1)]
            else:
                raw = np.array([d.score or 0.0 for d in documents], dtype=np.float64)
                contributions = _normalised(raw, self.method).tolist() if len(raw) else []
            floor = 0.0 if self.method == "rrf" else min(contributions, default=0.0)
            value_of: dict[str, float] = {}
            for document, value in zip(documents, contributions):
                value_of.setdefault(document.id, value)
            for doc_id in fused:
                # a document this list did not return gets the list's lowest normalised score
                fused[doc_id] += weight * value_of.get(doc_id, floor)
        order = sorted(fused, key=lambda doc_id: -fused[doc_id])[: top_k or self.top_k]
        return [
            Document(id=i, content=first_copy[i].content, meta=dict(first_copy[i].meta), score=fused[i]) for i in order
        ]

    @component.output_types(documents=list[Document])
    def run(self, documents: Variadic[list[Document]], top_k: int | None = None) -> dict[str, Any]:
        """Fuse the incoming ranked lists of one question."""
        return self.run_single(documents=documents, top_k=top_k)

    def run_batch(
        self, documents: list[list[list[Document]]], top_k: list[int | None] | None = None
    ) -> dict[str, list]:
        """Fuse each question's lists."""
        top_ks = top_k if top_k is not None else [None] * len(documents)
        return {"documents": [self.fuse(list(lists), k) for lists, k in zip(documents, top_ks)]}
