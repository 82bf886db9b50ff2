"""Relevance scorers of (query, passage) pairs, built from a component's JSON-safe ``scorer`` spec.

Every scorer has ``warm_up()`` (loads its model; constructors are light) and
``score(pairs) -> np.ndarray``, one float per pair, higher meaning more relevant; callers send every
pair of a batch in one call. Specs (:func:`make_scorer`):

- ``{"type": "cross-encoder", "model": ID_OR_PATH, ...}``: any Hugging Face cross-encoder
  (:class:`~hopstack.models.cross_encoder.CrossEncoderScorer`; none ships offline).
- ``{"type": "bi-encoder", "model": "minilm", ...}``: cosine similarity of sentence-transformer
  embeddings (:class:`BiEncoderScorer`), a cheap approximation of a cross-encoder that works offline.
- ``{"type": "llm", "llm": LLM_SPEC, ...}``: pointwise LLM relevance, log P(Yes) - log P(No) of a
  relevance prompt (:class:`LLMScorer`); ``LLM_SPEC`` is what :func:`hopstack.models.llm.make_llm` takes.
"""

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from hopstack.models.cache import CachedLLM, CallCache
from hopstack.models.cross_encoder import CrossEncoderScorer
from hopstack.models.embedders import embed_texts, load_sentence_transformer
from hopstack.models.llm import make_llm

Pair = tuple[str, str]

RELEVANCE_PROMPT = (
    "Query: {query}\n\nPassage: {passage}\n\n"
    "Is the passage relevant to the query, that is, does it contain information that helps answer it? "
    "Answer Yes or No."
)


class Scorer(Protocol):
    """What every scorer offers."""

    def warm_up(self) -> None: ...

    def score(self, pairs: Sequence[Pair]) -> np.ndarray: ...


class BiEncoderScorer:
    """Cosine similarity of the query's and the passage's sentence embeddings.

    A bi-encoder is not a reranker: it is offered as a cheap approximation of a cross-encoder, since no
    cross-encoder weights are available offline. Each distinct text of a call is embedded once.

    :param model: a registry name (``minilm``), a Hugging Face id or a local path.
    :param device: ``auto | cpu | cuda | cuda:N``.
    :param batch_size: embedding batch size.
    :param cache: keep embeddings in the on-disk call cache (``HOPSTACK_CACHE=off`` overrides).
    """

    def __init__(self, model: str = "minilm", device: str = "auto", batch_size: int = 64, cache: bool = True):
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.cache = cache
        self._encoder = None
        self._call_cache: CallCache | None = None

    def warm_up(self) -> None:
        """Load the embedder (shared per process and device)."""
        if self._encoder is None:
            self._call_cache = CallCache() if self.cache else None
            self._encoder = load_sentence_transformer(self.model, self.device)

    def score(self, pairs: Sequence[Pair]) -> np.ndarray:
        """The cosine similarity of each pair's two texts."""
        self.warm_up()
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        row_of = {text: i for i, text in enumerate(dict.fromkeys(t for pair in pairs for t in pair))}
        vectors = embed_texts(
            self._encoder, list(row_of), self.batch_size, True, cache=self._call_cache, model_id=self.model
        )
        queries = vectors[[row_of[q] for q, _ in pairs]]
        passages = vectors[[row_of[p] for _, p in pairs]]
        return np.einsum("ij,ij->i", queries, passages)


class LLMScorer:
    """Pointwise LLM relevance: log P("Yes") - log P("No") after a relevance prompt (one chat message).

    All pairs go to the LLM's ``score`` in one call, through the on-disk call cache, so a repeated run
    makes no model calls. Small models rank with these margins; they are not calibrated labels.

    :param llm: an LLM spec for :func:`hopstack.models.llm.make_llm` (registry name, path, Hugging Face id,
        or ``{"backend": ..., ...}``).
    :param prompt: the user message, with ``{query}`` and ``{passage}`` placeholders.
    :param max_passage_words: words of the passage kept in the prompt.
    :param cache: use the call cache (``HOPSTACK_CACHE=off`` overrides).
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        prompt: str = RELEVANCE_PROMPT,
        max_passage_words: int = 300,
        cache: bool = True,
    ):
        if "{query}" not in prompt or "{passage}" not in prompt:
            raise ValueError("the LLM scorer's prompt needs the placeholders {query} and {passage}")
        self.llm = llm
        self.prompt = prompt
        self.max_passage_words = max_passage_words
        self.cache = cache
        self._backend = make_llm(llm)  # light: checks the spec, loads nothing
        self._llm: CachedLLM | None = None

    def warm_up(self) -> None:
        """Load the LLM (once per process) and put the call cache in front of it."""
        if self._llm is None:
            self._backend.warm_up()
            self._llm = CachedLLM(self._backend, CallCache(enabled=None if self.cache else False))

    def score(self, pairs: Sequence[Pair]) -> np.ndarray:
        """log P(Yes) - log P(No) for each pair."""
        self.warm_up()
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        prompts = [
            [{"role": "user", "content": self.prompt.format(query=q, passage=first_words(p, self.max_passage_words))}]
            for q, p in pairs
        ]
        log_probs = np.asarray(self._llm.score(prompts, ["Yes", "No"]), dtype=np.float64)
        return (log_probs[:, 0] - log_probs[:, 1]).astype(np.float32)


def first_words(text: str, n: int) -> str:
    """The first ``n`` whitespace-separated words of ``text``, joined by single spaces."""
    return " ".join(text.split()[:n])


SCORERS = {"cross-encoder": CrossEncoderScorer, "bi-encoder": BiEncoderScorer, "llm": LLMScorer}
ENCODER_SCORERS = ("cross-encoder", "bi-encoder")


def make_scorer(spec: dict[str, Any], device: str = "auto") -> Scorer:
    """A scorer from its spec ``{"type": ..., ...that scorer's parameters}`` (see the module docstring).

    ``device`` is the owning component's device, given to the encoder scorers; an LLM's device belongs
    to its ``llm`` spec. Nothing is loaded before ``warm_up``.
    """
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"scorer must be a mapping with a 'type' ({', '.join(SCORERS)}); got {spec!r}")
    settings = dict(spec)
    kind = settings.pop("type")
    if kind not in SCORERS:
        raise ValueError(f"unknown scorer type {kind!r}; use one of {', '.join(SCORERS)}")
    if kind in ENCODER_SCORERS:
        if "device" in settings:
            raise ValueError(f"scorer {kind!r}: set the component's device, not the scorer's")
        settings["device"] = device
    try:
        return SCORERS[kind](**settings)
    except TypeError as exc:
        raise ValueError(f"scorer {kind!r}: {exc}") from exc
