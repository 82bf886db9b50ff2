"""Sentence embedders, loaded once per process and shared by every component that names them."""

import threading
from collections.abc import Callable, Sequence

import numpy as np

from hopstack.models.devices import resolve_device
from hopstack.models.onnx_backend import backend_identity, resolve_backend, use_backend
from hopstack.models.registry import resolve_model

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str, str], object] = {}


def load_sentence_transformer(model: str, device: str = "auto", backend: str = "torch"):
    """The process-wide SentenceTransformer for ``model`` (registry name, hub id or path) on ``device``, run
    on ``backend`` (:mod:`hopstack.models.onnx_backend`; ``auto``: ONNX int8 on a CPU when onnxruntime is
    installed). :func:`hopstack.models.onnx_backend.loaded_backend` says which backend it runs on."""
    resolved_device = resolve_device(device)
    wanted = resolve_backend(backend, resolved_device)
    key = (resolve_model(model), resolved_device, wanted)
    with _LOCK:
        if key not in _MODELS:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()

            import torch

            # weights stored in float16 (a trained model with --float16) are computed in float32 on a CPU
            dtype = {"dtype": torch.float32} if resolved_device == "cpu" else {}
            encoder = SentenceTransformer(key[0], device=resolved_device, model_kwargs=dtype)
            use_backend(encoder, key[0], wanted)
            _MODELS[key] = encoder
        return _MODELS[key]


def embed_texts(
    model, texts: list[str], batch_size: int = 64, normalize: bool = True, cache=None, model_id: str = ""
) -> np.ndarray:
    """Encode ``texts`` as float32 rows (L2-normalised when ``normalize``), in batches of ``batch_size``.

    With a :class:`~hopstack.models.cache.CallCache`, texts already embedded by ``model_id`` with the same
    normalisation come from the cache and only the others are encoded.
    """
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)

    def encode(batch: list[str]) -> np.ndarray:
        vectors = model.encode(
            batch, batch_size=batch_size, normalize_embeddings=normalize, convert_to_numpy=True, show_progress_bar=False
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    if cache is None or not cache.enabled:
        return encode(list(texts))
    identity = {"kind": "embed", "model": model_id or str(model), "normalize": normalize}
    identity.update(backend_identity(model))  # an ONNX backend's vectors are kept apart from torch's
    rows = cache.cached_map(identity, list(texts), lambda missing: encode(missing).tolist())
    return np.asarray(rows, dtype=np.float32)


def pair_cosines(pairs: Sequence[tuple[str, str]], embed: Callable[[list[str]], np.ndarray]) -> np.ndarray:
    """The cosine of each pair's two texts, ``embed`` giving L2-normalised rows: every distinct text of the
    pairs is embedded once (a passage several questions share, a question with many candidates)."""
    if not pairs:
        return np.zeros(0, dtype=np.float32)
    row_of = {text: i for i, text in enumerate(dict.fromkeys(t for pair in pairs for t in pair))}
    vectors = embed(list(row_of))
    return np.einsum("ij,ij->i", vectors[[row_of[q] for q, _ in pairs]], vectors[[row_of[t] for _, t in pairs]])


def span_vectors(model, texts: list[str], spans: list[list[tuple[int, int]]], batch_size: int = 64) -> list[np.ndarray]:
    """Per text, one L2-normalised row per character span ``(first, end)`` of it: the mean of the contextual
    token embeddings of the tokens that start inside the span, the text encoded once as a whole (a zero row
    where no token does, as past the model's ``max_seq_length``). Texts are used as given (strip them first:
    the encoder strips what it encodes)."""
    if not texts:
        return []
    embedded = model.encode(
        texts, batch_size=batch_size, output_value="token_embeddings", convert_to_numpy=False, show_progress_bar=False
    )
    offsets = model.tokenizer(texts, return_offsets_mapping=True, truncation=True, max_length=model.max_seq_length)
    rows = []
    for vectors, places, text_spans in zip(embedded, offsets["offset_mapping"], spans):
        vectors = np.asarray(vectors.detach().cpu().float(), dtype=np.float64)
        count = min(len(vectors), len(places))
        starts = np.array([a if b > a else -1 for a, b in places[:count]])  # special tokens start nowhere
        cumulative = np.vstack([np.zeros((1, vectors.shape[1])), np.cumsum(vectors[:count], axis=0)])
        pooled = np.zeros((len(text_spans), vectors.shape[1]))
        for i, (first, end) in enumerate(text_spans):
            inside = np.flatnonzero((starts >= first) & (starts < end))
            if inside.size:
                pooled[i] = (cumulative[inside[-1] + 1] - cumulative[inside[0]]) / (inside[-1] + 1 - inside[0])
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        rows.append((pooled / np.where(norms > 0, norms, 1.0)).astype(np.float32))
    return rows
