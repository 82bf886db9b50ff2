"""Cross-encoder relevance scoring for any Hugging Face cross-encoder id or path (sentence-transformers).

No cross-encoder ships offline here; users pass e.g. ``cross-encoder/ms-marco-MiniLM-L-6-v2`` on a
machine that has it. Models load once per process per device and are shared.
"""

import threading
from collections.abc import Sequence

import numpy as np

from hopstack.models.devices import resolve_device
from hopstack.models.registry import resolve_model

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str, int], object] = {}


class CrossEncoderScorer:
    """Scores (query, passage) pairs with a cross-encoder.

    :param model: a Hugging Face id or a local folder.
    :param device: ``auto | cpu | cuda | cuda:N``.
    :param batch_size: pairs per forward pass.
    :param max_length: tokens per pair; longer pairs are truncated (the passage side first).
    """

    def __init__(self, model: str, device: str = "auto", batch_size: int = 32, max_length: int = 512):
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self._encoder = None

    def warm_up(self) -> None:
        """Load the model (shared per process, device and length)."""
        if self._encoder is None:
            key = (resolve_model(self.model), resolve_device(self.device), self.max_length)
            with _LOCK:
                if key not in _MODELS:
                    from sentence_transformers import CrossEncoder

                    _MODELS[key] = CrossEncoder(key[0], device=key[1], max_length=key[2])
                self._encoder = _MODELS[key]

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """One relevance score per pair (the model's raw output; higher is more relevant)."""
        self.warm_up()
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        scores = self._encoder.predict(
            [list(p) for p in pairs], batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(scores, dtype=np.float32).reshape(len(pairs), -1)[:, 0]
