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
            with _LOCK:
                if key not in _MODELS:
                    import torch
                    from sentence_transformers import CrossEncoder

                    # weights stored in float16 (the shipped models) are computed in float32 on a CPU
                    dtype = {"dtype": torch.float32} if key[1] == "cpu" else {}
                    encoder = CrossEncoder(key[0], device=key[1], max_length=key[2], model_kwargs=dtype)
                    use_backend(encoder, key[0], key[3])
                    _MODELS[key] = encoder
                self._encoder = _MODELS[key]
            self._call_cache = call_cache(self.cache)
            version = hashlib.sha256(recorded).hexdigest() if recorded else ""
            self._identity = {"kind": "cross-encoder", "model": self.model, "version": version, "length": key[2]}
            self._identity.update(backend_identity(self._encoder))  # an ONNX backend's scores are kept apart

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One relevance score per pair (the model's raw output; higher is more relevant)."""
        self.warm_up()
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        items = [list(p) for p in pairs]
        if self._call_cache is None or not self._call_cache.enabled:
            return self._predict(items)
        return np.asarray(self._call_cache.cached_map(self._identity, items, lambda m: self._predict(m).tolist()))

    def _predict(self, items: list[list[str]]) -> np.ndarray:
        predict = self._encoder.predict
        scores = predict(items, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True)
        return np.asarray(scores, dtype=np.float32).reshape(len(items), -1)[:, 0]
