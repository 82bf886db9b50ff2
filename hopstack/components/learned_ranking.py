"""Learned reranking: a LambdaRank model (LightGBM) over features of each candidate (docs/methods/trained-reranker.md).

:class:`LearnedReranker` reorders a first stage's candidates by a gradient-boosted ranker that
``hopstack train reranker`` fits on a dataset's train split. Its features (:class:`RankingFeatures`) are
cheap and read only the question, the candidate list and the candidates' metadata, plus, when the model
has one, the score of its trained scorer model (a cross-encoder, or a bi-encoder's cosine):

- the first stage: its score, the gap to the top score, the z-score within the list, the rank;
- the chunk: its position in its document (``meta.position``) and how many better-ranked candidates
  come from the same document (``meta.doc_id``). A ranker does not extrapolate the position to longer
  documents than it was trained on: on a candidate list holding a later chunk than any of its training
  candidates (``chunk_position_limit``), the position reads 0 for every candidate of the list;
- named fields (``source``, ``title``, ``published_at`` by default): whether the candidate's value of the
  field is named in the question (case and spacing ignored; an ISO date-time value also matches as
  "October 7, 2023" or "13:41:30"), how many better-ranked candidates share that value, and how many
  distinct values of the field the list's candidates name. Questions that say where or when something
  was reported ("as reported by TechCrunch on October 7, 2023") are matched to the chunks that carry it;
- the scorer model (optional): its score, z-score within the list and rank.

A model is a folder (``$HOPSTACK_HOME/models/NAME`` or a path) holding ``manifest.json``, whose
``ranker`` section names the features and the LightGBM text model file, and, when the ranker uses one,
the scorer model's weights (``bi_encoder: true`` in the manifest: a bi-encoder, else a cross-encoder).
The ranker expects the first stage it was trained behind (the manifest's ``negatives`` pipeline): its
scores are features.

A fine-tuned bi-encoder's cosine is worth what it is worth on the corpora it was trained on; on a corpus
unlike them it can be the weaker signal, and a ranker that learned to trust it then loses to the first
stage. So a bi-encoder ranker also carries a :class:`DomainCheck` and a fallback ranker (the manifest's
``ranker.domain``; no scorer features and no chunk positions): a question whose candidates' embeddings lie
far from every training corpus's is ranked by the fallback.
"""

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from haystack import Document, component

from hopstack.components.rerankers import Reranker
from hopstack.core.ranking import candidate_top_ks, reorder_each, split_by_sizes
from hopstack.core.text import passage_text
from hopstack.errors import HopstackInputError
from hopstack.models.cross_encoder import CrossEncoderScorer
from hopstack.models.embedders import pair_cosines
from hopstack.models.onnx_backend import check_backend
from hopstack.models.registry import TRAINED_MANIFEST, resolve_model
from hopstack.models.scorers import BiEncoderScorer, score_all

DEFAULT_NAMED_FIELDS = ("source", "title", "published_at")
_SPACES = re.compile(r"\s+")


def _normalised(text: str) -> str:
    return _SPACES.sub(" ", text).strip().lower()


def _spellings(value: Any) -> list[str]:
    """How a field value may be written in a question: itself, and for an ISO date-time also
    "Month D, YYYY" and "HH:MM:SS"."""
    text = _normalised(str(value))
    if not text:
        return []
    spellings = [text]
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return spellings
    spellings.append(_normalised(f"{moment:%B} {moment.day}, {moment.year}"))
    if "t" in text or ":" in text:
        spellings.append(f"{moment:%H:%M:%S}")
    return spellings


def _earlier_same(values: list[Any]) -> list[int]:
    """For each position, how many earlier positions hold the same (non-empty) value."""
    seen: dict[Any, int] = {}
    counts = []
    for value in values:
        counts.append(seen.get(value, 0) if value not in (None, "") else 0)
        if value not in (None, ""):
            seen[value] = seen.get(value, 0) + 1
    return counts


def _list_stats(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per score: the gap to the list's best, the z-score within the list, and the rank (0 = best)."""
    if scores.size == 0:
        return scores, scores, scores
    std = scores.std()
    z = (scores - scores.mean()) / std if std > 0 else np.zeros_like(scores)
    rank = np.empty_like(scores)
    rank[np.argsort(-scores, kind="stable")] = np.arange(scores.size)
    return scores - scores.max(), z, rank


@dataclass(frozen=True)
class RankingFeatures:
    """The features :class:`LearnedReranker` ranks by (module docstring); ``names()`` lists them in column order.

    :param named_fields: metadata fields matched against the question.
    :param with_scorer: whether the cross-encoder's score is a feature.
    :param version: 2 (what training writes): candidates without a field's value share nothing in
        ``F_earlier_same``; 1 (manifests without a version, read as they were trained): a missing value
        counted as a value of its own, so where the corpus lacks the field ``F_earlier_same`` repeated the
        first-stage rank.
    :param chunk_position_limit: the latest chunk position among the training candidates (training records
        it); on a candidate list with a later chunk, ``chunk_position`` reads 0 throughout, since what the
        ranker learned about positions in shorter documents need not hold there. None (manifests written
        before it): positions are read as they are.
    """

    named_fields: tuple[str, ...] = DEFAULT_NAMED_FIELDS
    with_scorer: bool = False
    version: int = 2
    chunk_position_limit: int | None = None

    def names(self) -> list[str]:
        """The feature names, one per column of :meth:`compute`'s matrix."""
        names = ["first_stage_score", "first_stage_gap", "first_stage_z", "first_stage_rank"]
        names += ["chunk_position", "same_document_earlier"]
        for field in self.named_fields:
            names += [f"{field}_named", f"{field}_earlier_same", f"{field}_values_named"]
        if self.with_scorer:
            names += ["scorer_score", "scorer_z", "scorer_rank"]
        return names

    def monotone_directions(self) -> list[int]:
        """Per feature (``names()`` order), how the ranker may use it when trained with monotone constraints:
        +1 (a higher value never lowers a candidate's score), -1 (never raises it) or 0 (free). The first
        stage's and the scorer's scores can only count for a candidate and their ranks only against it; a
        named field can only count for it; repeating a document or a field value ranked above it can only
        count against it; the chunk's position and ``F_values_named`` stay free."""
        rising = {"first_stage_score", "first_stage_gap", "first_stage_z", "scorer_score", "scorer_z"}
        rising |= {f"{field}_named" for field in self.named_fields}
        falling = {"first_stage_rank", "scorer_rank", "same_document_earlier"}
        falling |= {f"{field}_earlier_same" for field in self.named_fields}
        return [1 if name in rising else -1 if name in falling else 0 for name in self.names()]

    def compute(self, query: str, documents: list[Document], scorer_scores: np.ndarray | None = None) -> np.ndarray:
        """The ``len(documents) x len(names())`` feature matrix of one question's candidates (first-stage
        order). A candidate without a first-stage score counts as scoring the list's lowest."""
        n = len(documents)
        if self.with_scorer and (scorer_scores is None or len(scorer_scores) != n):
            raise ValueError("RankingFeatures: with_scorer needs one scorer score per candidate")
        given = [d.score for d in documents if d.score is not None]
        floor = min(given) if given else 0.0
        first = np.array([floor if d.score is None else d.score for d in documents], dtype=np.float64)
        columns = [first, *_list_stats(first)[:2], np.arange(n, dtype=np.float64)]
        positions = np.array([float(d.meta.get("position") or 0) for d in documents])
        if self.chunk_position_limit is not None and n and positions.max() > self.chunk_position_limit:
            positions = np.zeros(n)
        columns.append(positions)
        columns.append(np.array(_earlier_same([d.meta.get("doc_id", d.id) for d in documents]), dtype=np.float64))
        question = _normalised(query)
        for field in self.named_fields:
            values = [d.meta.get(field) for d in documents]
            named = np.array(
                [float(any(s in question for s in _spellings(v))) if v not in (None, "") else 0.0 for v in values]
            )
            distinct_named = len({str(v) for v, hit in zip(values, named) if hit})
            shared = [str(v) if self.version == 1 or v not in (None, "") else None for v in values]
            columns += [named, np.array(_earlier_same(shared), dtype=np.float64)]
            columns.append(np.full(n, float(distinct_named)))
        if self.with_scorer:
            scores = np.asarray(scorer_scores, dtype=np.float64)
            _, z, rank = _list_stats(scores)
            columns += [scores, z, rank]
        return np.column_stack(columns) if n else np.zeros((0, len(self.names())))

    def stacked(
        self, queries: list[str], documents: list[list[Document]], scorer_scores: list[np.ndarray] | None = None
    ) -> np.ndarray:
        """The feature matrices of several questions' candidates, one under the other (LightGBM's input)."""
        own = scorer_scores if scorer_scores is not None else [None] * len(queries)
        matrices = [self.compute(q, d, s) for q, d, s in zip(queries, documents, own)]
        return np.vstack(matrices) if matrices else np.zeros((0, len(self.names())))

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``features`` entry."""
        entry = {
            "named_fields": list(self.named_fields),
            "with_scorer": self.with_scorer,
            "version": self.version,
            "names": self.names(),
        }
        if self.chunk_position_limit is not None:
            entry["chunk_position_limit"] = self.chunk_position_limit
        return entry

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RankingFeatures":
        """The features a manifest's ``features`` entry describes (its ``names`` must match)."""
        version = int(data.get("version", 1))
        if version not in (1, 2):
            raise ValueError(f"features version {version}: this hopstack computes versions 1 and 2")
        limit = data.get("chunk_position_limit")
        features = cls(
            tuple(data["named_fields"]), bool(data["with_scorer"]), version, None if limit is None else int(limit)
        )
        if data.get("names") != features.names():
            raise ValueError(f"the features {data.get('names')} are not the ones this hopstack computes")
        return features


def candidate_profile(vectors: np.ndarray) -> np.ndarray:
    """One question's candidates in one unit vector: the direction of the mean of their unit embeddings (zero
    without candidates)."""
    if not len(vectors):
        return np.zeros(vectors.shape[1] if vectors.ndim == 2 else 0)
    mean = np.asarray(vectors, dtype=np.float64).mean(axis=0)
    norm = np.linalg.norm(mean)
    return mean / norm if norm > 0 else mean


@dataclass(frozen=True)
class DomainCheck:
    """Whether a question's candidates look like those of a corpus the ranker's bi-encoder was trained on.

    Per training dataset, the centroid (unit mean) of its training questions' candidate profiles
    (:func:`candidate_profile`) and a threshold: the ``quantile`` of those questions' cosines to it. A
    question is *familiar* when its profile's cosine to some dataset's centroid reaches that dataset's
    threshold (so about ``quantile`` of a training corpus's own questions fall below).

    :param datasets: the training datasets' names, one per centroid.
    :param centroids: ``len(datasets) x dim`` unit rows.
    :param thresholds: one cosine per dataset.
    :param quantile: the share of each dataset's training questions below its threshold.
    """

    datasets: tuple[str, ...]
    centroids: tuple[tuple[float, ...], ...]
    thresholds: tuple[float, ...]
    quantile: float

    @classmethod
    def fit(cls, profiles: dict[str, list[np.ndarray]], quantile: float) -> "DomainCheck":
        """The check of datasets' training questions' profiles (``{dataset: [profile, ...]}``, none empty)."""
        names, centroids, thresholds = [], [], []
        for name, rows in profiles.items():
            matrix = np.asarray(rows, dtype=np.float64)
            centroid = candidate_profile(matrix)
            names.append(name)
            centroids.append(tuple(round(float(x), 6) for x in centroid))
            thresholds.append(round(float(np.quantile(matrix @ centroid, quantile)), 6))
        return cls(tuple(names), tuple(centroids), tuple(thresholds), quantile)

    def similarities(self, profiles: np.ndarray) -> np.ndarray:
        """``len(profiles) x len(datasets)``: each profile's cosine to each dataset's centroid."""
        return np.asarray(profiles, dtype=np.float64).reshape(len(profiles), -1) @ np.asarray(self.centroids).T

    def familiar(self, profiles: np.ndarray) -> np.ndarray:
        """Per profile, whether it reaches some dataset's threshold."""
        return (self.similarities(profiles) >= np.asarray(self.thresholds)).any(axis=1)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``ranker.domain`` entry (without the fallback ranker's file)."""
        return {
            "datasets": list(self.datasets),
            "quantile": self.quantile,
            "thresholds": list(self.thresholds),
            "centroids": [list(row) for row in self.centroids],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DomainCheck":
        """The check a manifest's ``ranker.domain`` entry describes."""
        centroids = tuple(tuple(float(x) for x in row) for row in data["centroids"])
        thresholds = tuple(float(x) for x in data["thresholds"])
        if not (len(data["datasets"]) == len(centroids) == len(thresholds)):
            raise ValueError("ranker.domain: one centroid and one threshold per dataset")
        return cls(tuple(data["datasets"]), centroids, thresholds, float(data["quantile"]))


def ranker_manifest(model: str) -> tuple[Path, dict[str, Any]]:
    """A learned ranker's folder and manifest; refuses a model without a ``ranker`` section."""
    folder = Path(resolve_model(model))
    path = folder / TRAINED_MANIFEST
    if not path.is_file():
        raise HopstackInputError(f"LearnedReranker model {model!r}: no {TRAINED_MANIFEST} in {folder}")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(manifest.get("ranker"), dict):
        raise HopstackInputError(
            f"LearnedReranker model {model!r}: {path} has no 'ranker' section (train it with hopstack train reranker)"
        )
    return folder, manifest


@component
class LearnedReranker(Reranker):
    """Rerank a first stage's candidates by a trained LambdaRank model over first-stage, metadata and
    (optionally) cross-encoder or bi-encoder features (module docstring).

    :param model: a model ``hopstack train reranker`` made: its name under ``$HOPSTACK_HOME/models`` or a folder.
    :param top_k: documents returned unless the ``top_k`` input overrides it.
    :param device: ``auto | cpu | cuda | cuda:N`` for the model's scorer model, if it has one.
    :param batch_size: pairs (cross-encoder) or texts (bi-encoder) per forward pass.
    :param backend: ``torch | onnx | onnx-int8 | auto`` for the scorer model (docs/concepts/backends.md).
    :param domain_check: with a model that has a :class:`DomainCheck` (a bi-encoder ranker), rank a question
        whose candidates look unlike every training corpus by the fallback ranker (no scorer features, no
        chunk positions); off: always by the ranker over the cosine.
    """

    def __init__(
        self,
        model: str,
        top_k: int = 10,
        device: str = "auto",
        batch_size: int = 32,
        backend: str = "torch",
        domain_check: bool = True,
    ):
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.model = model
        self.top_k = top_k
        self.device = device
        self.batch_size = batch_size
        self.backend = check_backend(backend)
        self.domain_check = domain_check
        self._booster = None
        self._features: RankingFeatures | None = None
        self._scorer: CrossEncoderScorer | BiEncoderScorer | None = None
        self._title_prefix = True
        self._domain: DomainCheck | None = None
        self._fallback = None
        self._fallback_features: RankingFeatures | None = None

    def warm_up(self) -> None:
        """Read the manifest, load the LightGBM model(s) and, when the ranker uses one, the scorer model."""
        if self._booster is not None:
            return
        import lightgbm

        folder, manifest = ranker_manifest(self.model)
        ranker = manifest["ranker"]
        self._features = RankingFeatures.from_dict(ranker["features"])
        self._title_prefix = bool(ranker.get("title_prefix", True))
        if self._features.with_scorer:
            # by the model's name, as PointwiseReranker would: both share its scores in the call cache
            if manifest.get("bi_encoder"):
                self._scorer = BiEncoderScorer(self.model, self.device, self.batch_size, backend=self.backend)
            else:
                length = int(manifest.get("hyperparameters", {}).get("max_length", 512))
                self._scorer = CrossEncoderScorer(
                    self.model, self.device, self.batch_size, max_length=length, backend=self.backend
                )
            self._scorer.warm_up()
        domain = ranker.get("domain")
        if self.domain_check and domain and isinstance(self._scorer, BiEncoderScorer):
            self._domain = DomainCheck.from_dict(domain)
            self._fallback_features = RankingFeatures.from_dict(domain["fallback_features"])
            self._fallback = lightgbm.Booster(model_file=str(folder / domain["fallback_file"]))
        self._booster = lightgbm.Booster(model_file=str(folder / ranker["file"]))

    def content_identity(self) -> str | None:
        """The manifest's sha256 (it holds the ranker file's), so retraining under the same name changes
        the fingerprint; None while the model does not exist."""
        path = Path(resolve_model(self.model)) / TRAINED_MANIFEST
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    def _scorer_scores(self, query: list[str], documents: list[list[Document]]) -> tuple[np.ndarray, np.ndarray]:
        """Every candidate's scorer score (one call) and, per question, whether the scorer is trusted on it
        (:class:`DomainCheck`; every question without one)."""
        pairs = [(q, passage_text(d, self._title_prefix)) for q, cands in zip(query, documents) for d in cands]
        trusted = np.ones(len(query), dtype=bool)
        if self._domain is None:
            return score_all(self._scorer, pairs, type(self).__name__), trusted
        vectors: dict[str, np.ndarray] = {}

        def embed(texts: list[str]) -> np.ndarray:
            rows = self._scorer.embed(texts)
            vectors.update(zip(texts, rows))
            return rows

        cosines = pair_cosines(pairs, embed)
        asked = [i for i, cands in enumerate(documents) if cands]
        profiles = [
            candidate_profile(np.array([vectors[passage_text(d, self._title_prefix)] for d in documents[i]]))
            for i in asked
        ]
        if asked:
            trusted[asked] = self._domain.familiar(np.array(profiles))
        return cosines, trusted

    def scorer_trusted(self, query: list[str], documents: list[list[Document]]) -> np.ndarray:
        """Per question, whether the ranker reads its scorer on it: False where the domain check sends the
        question to the fallback ranker; True everywhere for a ranker without a check (or with it off)."""
        self.warm_up()
        if self._domain is None:
            return np.ones(len(query), dtype=bool)
        return self._scorer_scores(query, documents)[1]

    def run_batch(
        self, query: list[str], documents: list[list[Document]], top_k: list[int | None] | None = None
    ) -> dict[str, list[Any]]:
        """Rerank a batch: every candidate's scorer score in one call, then one prediction per ranker."""
        ks = candidate_top_ks(query, documents, top_k, self.top_k)
        self.warm_up()
        sizes = [len(c) for c in documents]
        per_question: list[np.ndarray] | None = None
        trusted = np.ones(len(query), dtype=bool)
        if self._scorer is not None:
            scorer_scores, trusted = self._scorer_scores(query, documents)
            per_question = split_by_sizes(scorer_scores, sizes)
        scores: list[np.ndarray] = [np.zeros(0)] * len(query)
        for use_scorer in (True, False):
            chosen = [i for i in range(len(query)) if trusted[i] == use_scorer]
            if not chosen:
                continue
            features = self._features if use_scorer else self._fallback_features
            own = [per_question[i] for i in chosen] if per_question is not None and use_scorer else None
            matrix = features.stacked([query[i] for i in chosen], [documents[i] for i in chosen], own)
            booster = self._booster if use_scorer else self._fallback
            predicted = booster.predict(matrix) if len(matrix) else np.zeros(0)
            for i, part in zip(
                chosen, split_by_sizes(np.asarray(predicted, dtype=np.float64), [sizes[i] for i in chosen])
            ):
                scores[i] = part
        flat = np.concatenate(scores) if scores else np.zeros(0)
        return {"documents": reorder_each(documents, flat, ks)}
