"""Relevance scorers of (query, passage) pairs, built from a component's JSON-safe ``scorer`` spec.

Every scorer has ``warm_up()`` (loads its model; constructors are light) and
``score(pairs) -> np.ndarray``, one float per pair, higher meaning more relevant; callers send every
pair of a batch in one call. A scorer is a nested spec ``{type, init_parameters}`` (:func:`make_scorer`)
whose type is a class path or one of these short names:

- ``cross-encoder`` (``init_parameters: {model: ID_OR_PATH}``): any Hugging Face cross-encoder
  (:class:`~hopstack.models.cross_encoder.CrossEncoderScorer`; none ships offline).
- ``bi-encoder`` (``{model: minilm}``): cosine similarity of sentence-transformer embeddings
  (:class:`BiEncoderScorer`), a cheap approximation of a cross-encoder that works offline.
- ``llm`` (``{llm: LLM_SPEC}``): pointwise LLM relevance, log P(Yes) - log P(No) of a relevance prompt
  (:class:`LLMScorer`); ``LLM_SPEC`` is what :func:`hopstack.models.llm.make_llm` takes.
- ``llm-graded`` (``{llm: LLM_SPEC, scale: 10}``): fine-grained pointwise relevance, the expected grade
  over the probabilities of the grade tokens 0..scale (:class:`LLMGradedScorer`).
- ``extractive-qa`` (``{model: ID_OR_PATH}``): P(the passage answers the question) of a SQuAD 2.0-style
  extractive QA model (:class:`~hopstack.models.extractive_qa.ExtractiveQAScorer`), CompSelect's
  answerability.
"""

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from hopstack.core.roles import Scorer as ScorerRole
from hopstack.core.spec import NestedComponents, build, is_spec
from hopstack.core.text import first_words
from hopstack.models.cache import CallCache, LLMUser, call_cache
from hopstack.models.embedders import embed_texts, load_sentence_transformer, pair_cosines
from hopstack.models.onnx_backend import check_backend
from hopstack.models.registry import trained_manifest_bytes

Pair = tuple[str, str]

RELEVANCE_PROMPT = (
    "Query: {query}\n\nPassage: {passage}\n\n"
    "Is the passage relevant to the query, that is, does it contain information that helps answer it? "
    "Answer Yes or No."
)

GRADED_PROMPT = (
    "Query: {query}\n\nPassage: {passage}\n\n"
    "How relevant is the passage to the query, from 0 (unrelated) to {scale} (it contains the answer)? "
    "Answer with the number only."
)


class BiEncoderScorer:
    """Cosine similarity of the query's and the passage's sentence embeddings.

    A bi-encoder is not a reranker: it is offered as a cheap approximation of a cross-encoder, since no
    cross-encoder weights are available offline. Each distinct text of a call is embedded once.

    :param model: a registry name (``minilm``), a Hugging Face id or a local path.
    :param device: ``auto | cpu | cuda | cuda:N``.
    :param batch_size: embedding batch size.
    :param cache: keep embeddings in the on-disk call cache (``HOPSTACK_CACHE=off`` overrides).
    :param backend: ``torch | onnx | onnx-int8 | auto`` (docs/concepts/backends.md).
    """

    def __init__(
        self,
        model: str = "minilm",
        device: str = "auto",
        batch_size: int = 64,
        cache: bool = True,
        backend: str = "torch",
    ):
        self.backend = check_backend(backend)
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.cache = cache
        self._encoder = None
        self._call_cache: CallCache | None = None
        self._model_id = model

    def warm_up(self) -> None:
        """Load the embedder (shared per process and device)."""
        if self._encoder is None:
            self._call_cache = call_cache(self.cache)
            self._encoder = load_sentence_transformer(self.model, self.device, self.backend)
            recorded = trained_manifest_bytes(self.model)  # a trained model's cached embeddings follow its version
            self._model_id = f"{self.model}@{hashlib.sha256(recorded).hexdigest()}" if recorded else self.model

    def embed(self, texts: list[str]) -> np.ndarray:
        """The texts' L2-normalised embeddings (through the call cache)."""
        self.warm_up()
        return embed_texts(self._encoder, texts, self.batch_size, True, cache=self._call_cache, model_id=self._model_id)

    def score(self, pairs: Sequence[Pair]) -> np.ndarray:
        """The cosine similarity of each pair's two texts."""
        return pair_cosines(pairs, self.embed)


class LLMScorer(LLMUser):
    """Pointwise LLM relevance: log P("Yes") - log P("No") after a relevance prompt (one chat message).

    All pairs go to the LLM's ``score`` in one call, through the on-disk call cache, so a repeated run
    makes no model calls. Small models rank with these margins; they are not calibrated labels.

    :param llm: an LLM spec for :func:`hopstack.models.llm.make_llm` (a model name, or
        ``{type: llama.cpp | transformers | openai, init_parameters}``).
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
        self.use_llm(llm, cache)
        self.prompt = prompt
        self.max_passage_words = max_passage_words

    def score(self, pairs: Sequence[Pair]) -> np.ndarray:
        """log P(Yes) - log P(No) for each pair."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        log_probs = self._log_probs(pairs, ["Yes", "No"])
        return (log_probs[:, 0] - log_probs[:, 1]).astype(np.float32)

    def _log_probs(self, pairs: Sequence[Pair], candidates: list[str]) -> np.ndarray:
        """The LLM's log-probability of each candidate answer to each pair's prompt, (pairs x candidates)."""
        self.warm_up()
        prompts = [[{"role": "user", "content": self._prompt_text(q, p)}] for q, p in pairs]
        return np.asarray(self._llm.score(prompts, candidates), dtype=np.float64).reshape(len(pairs), len(candidates))

    def _prompt_text(self, query: str, passage: str) -> str:
        return self.prompt.format(query=query, passage=first_words(passage, self.max_passage_words))


class LLMGradedScorer(LLMScorer):
    """Fine-grained pointwise LLM relevance (ERank style): the expected grade sum_g g P(g), g = 0..scale.

    P(g) is read from the LLM's log-probabilities of the grades as answers (no sampling). A grade whose
    text begins another grade's ("1" begins "10") would count that one's mass too, so the longer grade's
    probability is subtracted from the shorter's; the grades' probabilities are then renormalised to
    sum 1, so the score is on the 0..scale scale whatever mass the LLM puts elsewhere.

    :param scale: the highest grade (10 for ERank's 0-10; 5 for REBEL's secondary criteria).
    :param prompt: the user message, with ``{query}``, ``{passage}`` and optionally ``{scale}``.

    The other parameters are :class:`LLMScorer`'s.
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        prompt: str = GRADED_PROMPT,
        scale: int = 10,
        max_passage_words: int = 300,
        cache: bool = True,
    ):
        if not 1 <= scale <= 100:
            raise ValueError(f"scale must be between 1 and 100, got {scale}")
        super().__init__(llm, prompt, max_passage_words, cache)
        self.scale = scale

    def score(self, pairs: Sequence[Pair]) -> np.ndarray:
        """The expected grade of each pair."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        grades = [str(g) for g in range(self.scale + 1)]
        return expected_grades(np.exp(self._log_probs(pairs, grades)), grades).astype(np.float32)

    def _prompt_text(self, query: str, passage: str) -> str:
        return self.prompt.format(query=query, passage=first_words(passage, self.max_passage_words), scale=self.scale)


def expected_grades(probabilities: np.ndarray, grades: list[str]) -> np.ndarray:
    """Per row of (pairs x grades) answer probabilities, the expected grade (see :class:`LLMGradedScorer`)."""
    exclusive = probabilities.copy()
    for longer, text in enumerate(grades):
        for shorter, prefix in enumerate(grades):
            if shorter != longer and text.startswith(prefix):
                exclusive[:, shorter] -= probabilities[:, longer]
    exclusive = np.clip(exclusive, 0.0, None)
    totals = exclusive.sum(axis=1, keepdims=True)
    exclusive = np.divide(exclusive, totals, out=np.full_like(exclusive, 1 / len(grades)), where=totals > 0)
    return exclusive @ np.array([float(g) for g in grades])


class ScorerUser(NestedComponents):
    """Mixin for components that hold a scorer: ``use_scorer`` checks the spec (loads nothing) and keeps the
    init parameters ``scorer`` and ``device``; ``warm_up`` loads the scorer's model."""

    def use_scorer(self, scorer: dict[str, Any], device: str = "auto") -> None:
        """Record the scorer spec and device (init parameters) and build the scorer from them."""
        self.scorer = scorer
        self.device = device
        self._scorer = make_scorer(scorer, device)

    def warm_up(self) -> None:
        """Load the scorer's model."""
        self._scorer.warm_up()


def make_scorer(spec: dict[str, Any], device: str = "auto") -> ScorerRole:
    """A scorer from its nested spec ``{type, init_parameters}`` (see the module docstring).

    ``device`` is the owning component's device, given to scorers that take one (the encoders); an LLM's
    device belongs to its ``llm`` spec. Nothing is loaded before ``warm_up``.
    """
    if is_spec(spec) and "device" in (spec.get("init_parameters") or {}):
        raise ValueError(f"scorer {spec['type']!r}: set the component's device, not the scorer's")
    return build(spec, "scorer", role=ScorerRole, defaults={"device": device})


def score_all(scorer: Any, pairs: list[tuple[str, str]], owner: str) -> np.ndarray:
    """The scorer's scores of ``pairs`` (one call), checked to be one finite-or-not float per pair."""
    scores = np.asarray(scorer.score(pairs), dtype=np.float64)
    if scores.shape != (len(pairs),):
        raise RuntimeError(f"{owner}: its scorer gave {scores.shape} scores for {len(pairs)} pairs")
    return scores
