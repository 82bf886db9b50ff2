"""CompSelect clue selection (docs/methods/compselect.md), training-free: extract, rerank and truncate clues.

CompSelect (Zhang et al., WWW 2026; arXiv 2502.11811) gives the reader a few sentences ("clues") instead of
whole documents: an extractor keeps the sentences useful for the question, a reranker orders them by
whether the reader could answer from them, and a truncator keeps the shortest sufficient prefix. The paper
fine-tunes LLaMA3.2-3B (extractor, truncator) and a bi-encoder (reranker). Here the three modules are the
training-free approximation of docs/methods/compselect.md#what-hopstack-implements, each a component and each batched
across questions:

- :class:`ClueExtractor`: documents split into sentences; every sentence scored against the question by a
  scorer (a cross-encoder for users who have one; MiniLM cosine offline); the top ``top_m`` kept and
  enriched with their near neighbours (cosine distance <= ``knn_threshold`` to a kept sentence, the
  paper's KNN rule for its training targets).
- :class:`ClueReranker`: ``weight * answerability + (1 - weight) * relevance``; answerability is by default
  the LLM's P("Yes") that the question can be answered from the clue alone (APPROXIMATION of "would the
  reader answer from this clue alone", which the paper labels by running the reader), relevance the
  extractor's min-max scaled score. A trained bi-encoder (the paper's reranker) plugs in as the
  answerability scorer with ``weight: 1``.
- :class:`ClueTruncator`: ``rule: stable``: the smallest prefix whose reader answer is confident
  (mean token probability >= ``confidence``) and unchanged when the next clue is added (the paper's
  "minimum sufficient clues"; its released training script scans from the longest prefix instead, which
  keeps nearly everything); ``rule: mass``: the smallest prefix holding ``mass`` of the clues' summed
  answerability (no reader calls). Both keep between ``min_clues`` and ``max_clues``.

Clues are Haystack Documents: id ``"<document id>:<sentence number>"``, the sentence as content, the source
document's meta (so retrieval metrics still see its ``doc_id``) plus ``source_id``, ``sentence`` and the
scores of each stage.
"""

from typing import Any

import numpy as np
from haystack import Document, component

from hopstack.core.batch import BatchComponent, batch_size_of
from hopstack.core.ranking import min_max
from hopstack.core.roles import Reader
from hopstack.core.spec import build
from hopstack.core.text import normalize_answer, passage_text, split_sentences
from hopstack.models.cache import call_cache
from hopstack.models.embedders import embed_texts, load_sentence_transformer
from hopstack.models.onnx_backend import check_backend
from hopstack.models.scorers import ScorerUser, score_all


def sentence_clues(documents: list[Document], min_words: int = 4) -> list[Document]:
    """The sentences of ``documents`` that :class:`ClueExtractor` scores, in order, as clues without scores:
    those of at least ``min_words`` words, each once (a repeat after :func:`~hopstack.core.text.normalize_answer`,
    such as the overlap of adjacent chunks, is dropped)."""
    seen: set[str] = set()
    clues = []
    for document in documents:
        for number, sentence in enumerate(split_sentences(document.content or "")):
            key = normalize_answer(sentence)
            if len(sentence.split()) >= min_words and key not in seen:
                seen.add(key)
                meta = {**document.meta, "source_id": document.id, "sentence": number}
                meta.setdefault("doc_id", document.id)
                clues.append(Document(id=f"{document.id}:{number}", content=sentence, meta=meta))
    return clues


@component
class ClueExtractor(ScorerUser, BatchComponent):
    """CompSelect's extractor, training-free: the sentences of the documents most useful for the question.

    Every sentence (at least ``min_words`` words; repeats, such as the overlap of adjacent chunks, once) is
    scored against the question in one scorer call for the batch; the ``top_m`` best are kept, then every
    other sentence within cosine distance ``knn_threshold`` of a kept one is added (at most ``top_m``
    of them, best first; 0 turns this off). Clues come out best first, scored by the scorer
    (``meta["clue_score"]``; ``meta["neighbour"]`` marks the KNN additions).

    :param scorer: a scorer spec (:func:`hopstack.models.scorers.make_scorer`); ``{type: cross-encoder,
        init_parameters: {model: cross-encoder/ms-marco-MiniLM-L-6-v2}}`` is CompSelect's choice; the
        default, MiniLM cosine, is what works offline.
    :param top_m: sentences kept by score (the paper: 20).
    :param knn_threshold: cosine distance of the KNN enrichment (the paper's 0.25).
    :param embedder: the sentence embedder of the KNN rule.
    :param max_documents: documents read, in order (None: all).
    :param min_words: shorter sentences are dropped.
    :param title_prefix: a sentence is scored as ``"title. sentence"`` when its document has a title.
    :param device: ``auto | cpu | cuda | cuda:N`` for the encoders.
    :param embedder_backend: ``torch | onnx | onnx-int8 | auto`` for the KNN rule's embedder
        (docs/concepts/backends.md; the scorer spec takes its own ``backend``).
    :param cache: keep the KNN rule's sentence embeddings in the on-disk call cache (``HOPSTACK_CACHE=off``
        overrides).
    """

    selects_clues = True  # the ClueSelector role (hopstack.core.roles)

    def __init__(
        self,
        scorer: dict[str, Any] | None = None,
        top_m: int = 20,
        knn_threshold: float = 0.25,
        embedder: str = "minilm",
        max_documents: int | None = None,
        min_words: int = 4,
        title_prefix: bool = True,
        device: str = "auto",
        embedder_backend: str = "torch",
        cache: bool = True,
    ):
        if top_m < 1 or min_words < 1 or (max_documents is not None and max_documents < 1):
            raise ValueError("top_m, min_words and max_documents must be at least 1")
        if not 0.0 <= knn_threshold <= 2.0:
            raise ValueError(f"knn_threshold is a cosine distance in [0, 2], got {knn_threshold}")
        self.use_scorer(scorer or {"type": "bi-encoder", "init_parameters": {"model": "minilm"}}, device)
        self.top_m = top_m
        self.knn_threshold = knn_threshold
        self.embedder = embedder
        self.max_documents = max_documents
        self.min_words = min_words
        self.title_prefix = title_prefix
        self.embedder_backend = check_backend(embedder_backend)
        self.cache = cache
        self._encoder = None

    def warm_up(self) -> None:
        """Load the scorer and (for the KNN rule) the embedder."""
        ScorerUser.warm_up(self)  # (Haystack's @component rebuilds the class: no zero-argument super())
        if self._encoder is None and self.knn_threshold > 0:
            self._encoder = load_sentence_transformer(self.embedder, self.device, self.embedder_backend)

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document]) -> dict[str, Any]:
        """The clues of one question."""
        return self.run_single(query=query, documents=documents)

    def run_batch(self, query: list[str], documents: list[list[Document]]) -> dict[str, list[Any]]:
        """The clues of a batch: one scorer call and one embedding call for every sentence of the batch."""
        batch_size_of({"query": query, "documents": documents})
        self.warm_up()
        candidates = [sentence_clues(docs[: self.max_documents], self.min_words) for docs in documents]
        pairs = [(q, passage_text(c, self.title_prefix)) for q, found in zip(query, candidates) for c in found]
        scores = score_all(self._scorer, pairs, type(self).__name__)
        vectors = self._embed([c.content for found in candidates for c in found])
        clues, offset = [], 0
        for found in candidates:
            part = slice(offset, offset + len(found))
            clues.append(self._select(found, scores[part], vectors[part] if vectors is not None else None))
            offset += len(found)
        return {"documents": clues}

    def _embed(self, sentences: list[str]) -> np.ndarray | None:
        if self._encoder is None or not sentences:
            return None
        return embed_texts(self._encoder, sentences, 64, True, cache=call_cache(self.cache), model_id=self.embedder)

    def _select(self, found: list[Document], scores: np.ndarray, vectors: np.ndarray | None):
        order = np.argsort(-scores, kind="stable")
        kept = order[: self.top_m].tolist()
        neighbours: list[int] = []
        if vectors is not None and len(order) > len(kept):
            distance = 1.0 - vectors @ vectors[kept].T  # cosine distance to each kept sentence
            near = set(np.flatnonzero(distance.min(axis=1) <= self.knn_threshold).tolist()) - set(kept)
            neighbours = [i for i in order.tolist() if i in near][: self.top_m]
        chosen = sorted(kept + neighbours, key=lambda i: -scores[i])
        flagged = set(neighbours)
        return [
            Document(
                id=found[i].id,
                content=found[i].content,
                meta={**found[i].meta, "clue_score": float(scores[i]), "neighbour": i in flagged},
            )
            for i in chosen
        ]


ANSWERABILITY_PROMPT = (
    "Question: {query}\n\nSentence: {passage}\n\n"
    "Does this sentence alone give the answer to the question, or a fact the answer needs? Answer Yes or No."
)


@component
class ClueReranker(ScorerUser, BatchComponent):
    """CompSelect's reranker, training-free: clues ordered by ``weight * a + (1 - weight) * r``.

    ``a`` is the answerability scorer's score on [0, 1]: P(Yes) of the LLM yes/no scorer (the default; its
    prompt is :data:`ANSWERABILITY_PROMPT` unless the spec gives one), grade / scale for ``llm-graded``,
    1 - P(no answer) for ``extractive-qa`` (a SQuAD 2.0 model, the suggestion of docs/methods/compselect.md), and
    min-max scaled over the question's clues for the other encoder scorers (a trained bi-encoder: the paper's reranker).
    ``r`` is the clue's ``meta["clue_score"]`` from :class:`ClueExtractor` (else its document score),
    min-max scaled over the question's clues. Each clue keeps ``a`` as ``meta["answerability"]`` (the
    truncator's mass rule reads it).

    :param answerability: a scorer spec (:func:`hopstack.models.scorers.make_scorer`).
    :param weight: the weight of answerability (docs/methods/compselect.md: 0.5).
    :param top_k: clues kept (None: all).
    :param title_prefix: a clue is scored as ``"title. sentence"`` when it has a title.
    :param device: ``auto | cpu | cuda | cuda:N`` for an encoder scorer.
    """

    selects_clues = True  # the ClueSelector role (hopstack.core.roles)

    def __init__(
        self,
        answerability: dict[str, Any] | None = None,
        weight: float = 0.5,
        top_k: int | None = None,
        title_prefix: bool = True,
        device: str = "auto",
    ):
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be in [0, 1], got {weight}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        spec = answerability or {"type": "llm", "init_parameters": {"llm": "qwen2.5-0.5b", "max_passage_words": 80}}
        if isinstance(spec, dict) and spec.get("type") == "llm":
            spec = {**spec, "init_parameters": {"prompt": ANSWERABILITY_PROMPT, **(spec.get("init_parameters") or {})}}
        self.use_scorer(spec, device)
        self.answerability = self.scorer
        self.weight = weight
        self.top_k = top_k
        self.title_prefix = title_prefix

    @component.output_types(documents=list[Document])
    def run(self, query: str, documents: list[Document]) -> dict[str, Any]:
        """Rerank one question's clues."""
        return self.run_single(query=query, documents=documents)

    def run_batch(self, query: list[str], documents: list[list[Document]]) -> dict[str, list[Any]]:
        """Rerank a batch: every (question, clue) pair in one scorer call."""
        batch_size_of({"query": query, "documents": documents})
        pairs = [(q, passage_text(c, self.title_prefix)) for q, clues in zip(query, documents) for c in clues]
        raw = score_all(self._scorer, pairs, type(self).__name__)
        ranked, offset = [], 0
        for clues in documents:
            answerable = self._probabilities(raw[offset : offset + len(clues)])
            offset += len(clues)
            relevance = min_max([c.meta.get("clue_score", c.score or 0.0) for c in clues], flat=1.0)
            combined = self.weight * answerable + (1.0 - self.weight) * relevance
            order = np.argsort(-combined, kind="stable")[: self.top_k]
            ranked.append(
                [
                    Document(
                        id=clues[i].id,
                        content=clues[i].content,
                        meta={**clues[i].meta, "answerability": float(answerable[i]), "relevance": float(relevance[i])},
                        score=float(combined[i]),
                    )
                    for i in order.tolist()
                ]
            )
        return {"documents": ranked}

    def _probabilities(self, scores: np.ndarray) -> np.ndarray:
        kind = self.scorer["type"]
        if kind == "llm":  # log P(Yes) - log P(No): P(Yes) renormalised over the two answers
            return 1.0 / (1.0 + np.exp(-scores))
        if kind == "llm-graded":
            return scores / float(self.scorer.get("scale", 10))
        if kind == "extractive-qa":  # already 1 - P(no answer)
            return scores
        return min_max(scores, flat=1.0)


TRUNCATION_RULES = ("stable", "mass")


@component
class ClueTruncator(BatchComponent):
    """CompSelect's truncator, training-free: the shortest prefix of the ranked clues that suffices.

    ``rule: stable`` asks the reader (an :class:`AnswerGenerator` built from ``reader``) for its answer from
    the first k clues, k = 1, 2, ..., every question of the batch at the same k in one LLM call, and keeps
    the first k whose answer has confidence >= ``confidence`` and is the same (after normalisation) with
    k + 1 clues; with every clue read, a confident answer keeps them all; else ``max_clues`` are kept
    (stopped: "budget"; the reader reads at most ``max_clues`` clues). Give ``reader`` the settings of the
    pipeline's own reader, so the answer checked is the one the pipeline gives (with the call cache on, the
    reader's own call is then a cache hit). ``rule: mass`` keeps the smallest k whose clues hold ``mass``
    of the question's summed ``meta["answerability"]`` (set by :class:`ClueReranker`), with no LLM call.

    Outputs the kept clues and, per question, ``trace``: the rule, clues kept, why it stopped
    (``stable | all-clues | budget | mass | no-clues``) and, for ``stable``, each prefix's answer and
    confidence.

    :param rule: ``stable`` or ``mass``.
    :param reader: the reader, a nested spec ``{type: reader, init_parameters}`` (``stable``; default: an
        :class:`~hopstack.components.generation.AnswerGenerator` with its defaults, reading ``max_clues``
        clues; ``max_documents`` below ``max_clues`` is refused).
    :param confidence: the reader's confidence threshold (``stable``).
    :param mass: the answerability share to keep (``mass``; docs/methods/compselect.md: 0.8).
    :param min_clues: at least this many clues are kept (when there are that many).
    :param max_clues: at most this many (the paper's K_max: 10).
    """

    selects_clues = True  # the ClueSelector role (hopstack.core.roles)

    def __init__(
        self,
        rule: str = "stable",
        reader: dict[str, Any] | None = None,
        confidence: float = 0.5,
        mass: float = 0.8,
        min_clues: int = 1,
        max_clues: int = 10,
    ):
        if rule not in TRUNCATION_RULES:
            raise ValueError(f"rule must be one of {', '.join(TRUNCATION_RULES)}, got {rule!r}")
        if not (0.0 <= confidence <= 1.0 and 0.0 < mass <= 1.0):
            raise ValueError("confidence must be in [0, 1] and mass in (0, 1]")
        if not 1 <= min_clues <= max_clues:
            raise ValueError(f"need 1 <= min_clues <= max_clues, got {min_clues} and {max_clues}")
        self.rule = rule
        self.reader = reader
        self.confidence = confidence
        self.mass = mass
        self.min_clues = min_clues
        self.max_clues = max_clues
        self._reader = None
        if rule == "stable":
            spec = reader or {"type": "reader"}
            self._reader = build(spec, "reader", role=Reader, defaults={"max_documents": max_clues})
        if self._reader is not None and self._reader.max_documents < max_clues:
            raise ValueError(
                f"reader.max_documents ({self._reader.max_documents}) must be at least max_clues ({max_clues}): "
                "the reader would not read the clues the rule adds"
            )

    def warm_up(self) -> None:
        """Load the reader's LLM (``stable``)."""
        if self._reader is not None:
            self._reader.warm_up()

    @component.output_types(documents=list[Document], trace=dict[str, Any])
    def run(self, query: str, documents: list[Document]) -> dict[str, Any]:
        """Truncate one question's ranked clues."""
        return self.run_single(query=query, documents=documents)

    def run_batch(self, query: list[str], documents: list[list[Document]]) -> dict[str, list[Any]]:
        """Truncate a batch of ranked clue lists."""
        batch_size_of({"query": query, "documents": documents})
        kept = self._stable(query, documents) if self.rule == "stable" else [self._by_mass(c) for c in documents]
        return {
            "documents": [clues[:k] for clues, (k, _) in zip(documents, kept)],
            "trace": [{"rule": self.rule, "kept": k, **trace} for k, trace in kept],
        }

    def _by_mass(self, clues: list[Document]) -> tuple[int, dict[str, Any]]:
        if not clues:
            return 0, {"stopped": "no-clues"}
        missing = [c.id for c in clues if "answerability" not in c.meta]
        if missing:
            raise ValueError(
                f"ClueTruncator(rule='mass') reads meta['answerability'] (set by ClueReranker); clue {missing[0]!r} "
                "has none"
            )
        values = np.clip([float(c.meta["answerability"]) for c in clues], 0.0, None)
        total = values.sum()
        share = np.cumsum(values) / total if total > 0 else np.linspace(1 / len(values), 1.0, len(values))
        k = int(np.searchsorted(share, self.mass - 1e-12)) + 1
        return self._bounded(k, len(clues)), {"stopped": "mass"}

    def _bounded(self, k: int, n: int) -> int:
        return min(max(k, self.min_clues), self.max_clues, n)

    def _stable(self, query: list[str], documents: list[list[Document]]) -> list[tuple[int, dict[str, Any]]]:
        self.warm_up()
        results: list[tuple[int, dict[str, Any]] | None] = [None] * len(query)
        answers: list[list[str]] = [[] for _ in query]
        confidences: list[list[float]] = [[] for _ in query]
        for i, clues in enumerate(documents):
            if not clues:
                results[i] = (0, {"stopped": "no-clues"})
        k = 1
        while any(r is None for r in results):
            active = [i for i, r in enumerate(results) if r is None]
            for i, answer in zip(
                active, self._reader.answer([query[i] for i in active], [documents[i][:k] for i in active])
            ):
                answers[i].append(answer.data)
                confidences[i].append(float(answer.meta["confidence"]))
                results[i] = self._decide(k, len(documents[i]), answers[i], confidences[i])
            k += 1
        return [
            (k, {**trace, "answers": answers[i], "confidences": confidences[i]} if answers[i] else trace)
            for i, (k, trace) in enumerate(results)
        ]

    def _decide(self, k: int, n: int, answers: list[str], confidences: list[float]) -> tuple[int, dict] | None:
        """After the reader's answer from k of n clues: (clues kept, trace) once decided, else None. The
        reader never reads more than ``max_clues`` clues: the budget ends the scan there."""
        if k >= 2 and k - 1 >= self.min_clues and confidences[k - 2] >= self.confidence:
            if normalize_answer(answers[k - 2]) == normalize_answer(answers[k - 1]):
                return k - 1, {"stopped": "stable"}
        if k == n and n <= self.max_clues and confidences[k - 1] >= self.confidence:
            return n, {"stopped": "all-clues"}
        if k >= min(n, self.max_clues):
            return self._bounded(self.max_clues, n), {"stopped": "budget"}
        return None
