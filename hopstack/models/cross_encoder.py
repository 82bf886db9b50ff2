"""Cross-encoder relevance scoring for any Hugging Face cross-encoder id or path (sentence-transformers).

No cross-encoder ships offline here; users pass e.g. ``cross-encoder/ms-marco-MiniLM-L-6-v2`` on a
machine that has it, or the name of one that ``hopstack train reranker`` made. Models load once per
process per device and are shared; scores go through the call cache.
"""

import hashlib
import json
import threading
from collections.abc import Sequence

import numpy as np

from hopstack.errors import HopstackInputError
from hopstack.models.cache import CallCache, call_cache
from hopstack.models.devices import resolve_device
from hopstack.models.onnx_backend import backend_identity, check_backend, resolve_backend, use_backend
from hopstack.models.registry import resolve_model, trained_manifest_bytes

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str, int, str], object] = {}


def load_cross_encoder(path: str, device: str, max_length: int, backend: str):
    """The sentence-transformers ``CrossEncoder`` at ``path`` on a resolved ``device`` and ``backend``, loaded
    once per process and shared (weights stored in float16, as the shipped models are, computed in float32
    on a CPU)."""
    key = (path, device, max_length, backend)
    with _LOCK:
        if key not in _MODELS:
            import torch
            from sentence_transformers import CrossEncoder

            dtype = {"dtype": torch.float32} if device == "cpu" else {}
            encoder = CrossEncoder(path, device=device, max_length=max_length, model_kwargs=dtype)
            use_backend(encoder, path, backend)
            _MODELS[key] = encoder
        return _MODELS[key]


class CrossEncoderScorer:
    """Scores (query, passage) pairs with a cross-encoder.

    :param model: a Hugging Face id or a local folder.
    :param device: ``auto | cpu | cuda | cuda:N``.
    :param batch_size: pairs per forward pass.
    :param max_length: tokens per pair; longer pairs are truncated (the passage side first).
    :param cache: keep scores in the on-disk call cache (``HOPSTACK_CACHE=off`` overrides); a trained
        model's scores are keyed by its manifest, so retraining it under the same name misses the cache.
    :param backend: ``torch | onnx | onnx-int8 | auto`` (:mod:`hopstack.models.onnx_backend`); the scores of
        an ONNX backend are cached apart from torch's.
    """

    kind = "cross-encoder"  # what the call cache keys its outputs by

    def __init__(
        self,
        model: str,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int = 512,
        cache: bool = True,
        backend: str = "torch",
    ):
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.backend = check_backend(backend)
        self.max_length = max_length
        self.cache = cache
        self._encoder = None
        self._call_cache: CallCache | None = None
        self._identity: dict[str, object] = {}

    def warm_up(self) -> None:
        """Load the model (shared per process, device and length)."""
        if self._encoder is None:
            device = resolve_device(self.device)
            key = (resolve_model(self.model), device, self.max_length, resolve_backend(self.backend, device))
            recorded = trained_manifest_bytes(key[0])
            described = json.loads(recorded) if recorded else {}
            if described.get("cross_encoder") is False:
                use = (
                    "score with {type: bi-encoder}"
                    if described.get("bi_encoder")
                    else "rank with hopstack.components.learned_ranking.LearnedReranker"
                )
                raise HopstackInputError(
                    f"model {self.model!r} has no cross-encoder (a {described.get('role', 'trained model')}): {use}"
                )
            self._encoder = load_cross_encoder(*key)
            self._call_cache = call_cache(self.cache)
            version = hashlib.sha256(recorded).hexdigest() if recorded else ""
            self._identity = {"kind": self.kind, "model": self.model, "version": version, "length": key[2]}
            self._identity.update(backend_identity(self._encoder))  # an ONNX backend's scores are kept apart

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One relevance score per pair (the model's raw output; higher is more relevant)."""
        return self._outputs(pairs)

    def _outputs(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """:meth:`_predict` of the pairs, through the call cache when it is on."""
        self.warm_up()
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        items = [list(p) for p in pairs]
        if self._call_cache is None or not self._call_cache.enabled:
            return self._predict(items)
        return np.asarray(self._call_cache.cached_map(self._identity, items, lambda m: self._predict(m).tolist()))

    def _logits(self, items: list[list[str]]) -> np.ndarray:
        predict = self._encoder.predict
        scores = predict(items, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(len(items), -1)

    def _predict(self, items: list[list[str]]) -> np.ndarray:
        return self._logits(items)[:, 0]


NLI_LABELS = ("entailment", "neutral", "contradiction")


def nli_columns(id2label: dict) -> list[int]:
    """The output columns of :data:`NLI_LABELS`, in that order, from a model's ``id2label`` (labels matched
    case-insensitively by their start: ``ENTAILMENT``, ``contradiction``...); a model whose labels do not name
    all three is refused."""
    found = {}
    for column, label in id2label.items():
        for name in NLI_LABELS:
            if str(label).casefold().startswith(name[:7]):
                found[name] = int(column)
    missing = [name for name in NLI_LABELS if name not in found]
    if missing:
        raise HopstackInputError(
            f"not an NLI model: its labels {sorted(map(str, id2label.values()))} do not name {', '.join(missing)}"
        )
    return [found[name] for name in NLI_LABELS]


class NliClassifier(CrossEncoderScorer):
    """Entailment, neutral and contradiction probabilities of (premise, hypothesis) pairs from a three-label
    cross-encoder: a model ``hopstack train nli`` made, or any Hugging Face NLI cross-encoder whose labels
    name the three classes (e.g. ``cross-encoder/nli-deberta-v3-small`` on a machine that has it). Takes
    :class:`CrossEncoderScorer`'s parameters; its ``score`` is P(entailment)."""

    kind = "nli"

    def warm_up(self) -> None:
        """Load the model and find its label columns (a model that is no NLI model is refused)."""
        if self._encoder is None:
            super().warm_up()
            try:
                self._columns = nli_columns(self._encoder.model.config.id2label)
            except HopstackInputError as exc:
                self._encoder = None
                raise HopstackInputError(f"model {self.model!r}: {exc}") from None

    def probabilities(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Per pair the probabilities of :data:`NLI_LABELS` (softmax over the three), an array (pairs, 3)."""
        return self._outputs(pairs).reshape(len(pairs), len(NLI_LABELS))

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """P(entailment) of each pair."""
        return self.probabilities(pairs)[:, 0]

    def _predict(self, items: list[list[str]]) -> np.ndarray:
        from scipy.special import softmax

        return softmax(self._logits(items)[:, self._columns].astype(np.float64), axis=1).astype(np.float32)
