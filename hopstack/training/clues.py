"""``hopstack train clues``: a cross-encoder clue scorer for CompSelect, trained on a dataset's train split
(docs/methods/compselect.md#trained-clue-scorer).

1. Each dataset's train split runs through a first-stage pipeline (``yaml/hybrid.yaml`` by default) on the
   dataset's own index, its last stage deepened to ``depth`` chunks (:func:`hopstack.training.reranker.training_sets`).
2. Their sentences are the clues :class:`~hopstack.components.compression.ClueExtractor` would score
   (:func:`~hopstack.components.compression.sentence_clues`). A sentence is gold when it overlaps
   (:func:`overlaps`) one of the question's evidence texts (:func:`evidence`): MultiHop-RAG's evidence facts,
   a HotpotQA-format record's supporting-fact sentences (in the chunks of that sentence's title only), or a
   SciFact claim's rationale sentences, SUPPORT and CONTRADICT alike (in the chunks of that abstract only;
   :func:`~hopstack.datasets.beir.claim_evidence`, which approximates SciFact's sentence numbering).
   Other formats have no sentence-level gold and are refused.
3. Pairs: per question its first ``max_positives`` gold sentences (label 1) and ``num_negatives`` hard
   negatives (label 0): the non-gold sentences sharing the most content words with the question (stopwords
   left out; ties: the better-ranked chunk's sentence first). A share ``dev_share`` of the questions is held
   out and gives none.
4. The cross-encoder is trained as ``hopstack train reranker`` trains its own
   (:func:`hopstack.training.reranker.fit`; with a ``teacher``, distilled from its scores), and its folder is
   built, resumed and installed the same way. With ``bi_encoder`` the base model is fine-tuned as a
   bi-encoder instead (:func:`~hopstack.training.reranker.fit_bi_encoder`): it keeps MiniLM's cosine
   scoring, which ClueExtractor already uses, and learns where the question's gold sentences lie.
5. On the held-out questions, the gold sentences' MRR@10 and Recall@5 among all candidate sentences, ranked
   by the trained scorer and by MiniLM cosine (ClueExtractor's default scorer), go to the manifest.
"""

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from haystack import Document

from hopstack import __version__
from hopstack.components.compression import sentence_clues
from hopstack.components.stopping import STOPWORDS
from hopstack.core.ranking import split_by_sizes
from hopstack.core.text import normalize_answer
from hopstack.datasets.base import BenchmarkQuestion
from hopstack.datasets.beir import claim_evidence, root_of
from hopstack.datasets.benchmark import BenchmarkDataset
from hopstack.errors import HopstackInputError
from hopstack.experiments.metrics import source_id
from hopstack.graphs.runner import Progress
from hopstack.models.scorers import make_scorer, score_all
from hopstack.training.reranker import (
    Ranked,
    Status,
    StepReport,
    TrainingConfig,
    candidate_pairs,
    check_request,
    command_line,
    dataset_records,
    fit,
    fit_bi_encoder,
    hyperparameters,
    install,
    is_held_out,
    labelled,
    load_base,
    loss_name,
    make_pairs,
    pair_questions,
    pairs_record,
    partial_dir,
    save_trained,
    start_folder,
    teacher_spec,
    trained_scores,
    training_sets,
    with_teacher_scores,
)

SENTENCE_GOLD = ("multihop-rag", "hotpotqa", "beir")  # formats whose questions can say which sentences are gold
MINILM = {"type": "bi-encoder", "init_parameters": {"model": "minilm"}}  # ClueExtractor's default scorer
GOLD_RULE = "case-folded, whitespace removed: the sentence contains the evidence text or the text the sentence"
NEGATIVES_RULE = "non-gold sentences sharing the most question content words; ties: the better-ranked chunk first"
_SPACE = re.compile(r"\s+")


@dataclass(kw_only=True)
class ClueTraining(TrainingConfig):
    """What ``hopstack train clues`` trains: data, first stage, and hyper-parameters (sentence-sized pairs)."""

    depth: int = 10
    max_length: int = 96
    batch_size: int = 32


def evidence(question: BenchmarkQuestion, dataset_format: str) -> list[tuple[str | None, str]]:
    """A question's sentence-level gold as ``(source document id, text)``: MultiHop-RAG's evidence facts (any
    document: its metrics judge chunks by the fact alone), or the ``supporting_sentences`` of a HotpotQA-format
    record (the document of the fact's title) or of a SciFact claim (:func:`with_sentence_gold`)."""
    if dataset_format == "multihop-rag":
        return [(None, fact) for fact in question.facts]
    return [(str(title), str(text)) for title, text in question.extra.get("supporting_sentences", [])]


def _folded(text: str) -> str:
    return _SPACE.sub("", text).casefold()


def overlaps(sentence: str, text: str) -> bool:
    """Whether a sentence overlaps an evidence text: with all whitespace removed and case folded, one
    contains the other (a fact of several sentences contains each; a fact that is part of a sentence is
    contained in it)."""
    a, b = _folded(sentence), _folded(text)
    return bool(a and b) and (a in b or b in a)


def is_gold_sentence(clue: Document, gold: Sequence[tuple[str | None, str]]) -> bool:
    """Whether a clue overlaps one of the evidence texts ``gold`` (:func:`evidence`) of its own document."""
    own = source_id(clue)
    return any(source in (None, own) and overlaps(clue.content or "", text) for source, text in gold)


def with_sentence_gold(data: BenchmarkDataset) -> list[BenchmarkQuestion]:
    """The train split's questions with sentence-level gold; a format without it, an empty split or one
    without any gold is refused."""
    if data.format not in SENTENCE_GOLD:
        raise HopstackInputError(
            f"{data.source}: hopstack train clues needs sentence-level gold (MultiHop-RAG's evidence facts, "
            f"HotpotQA-format supporting facts or SciFact's claim files); dataset {data.name!r} ({data.format} "
            "format) has none"
        )
    questions = labelled(data)
    if data.format == "beir":
        questions = with_rationales(data, questions)
    found = [q for q in questions if evidence(q, data.format)]
    if not found:
        raise HopstackInputError(f"{data.source}: no question of the train split has a supporting-fact sentence")
    return found


def with_rationales(data: BenchmarkDataset, questions: list[BenchmarkQuestion]) -> list[BenchmarkQuestion]:
    """SciFact claims with their rationale sentences as ``supporting_sentences`` (abstract id, sentence), read
    from the claim files beside the qrels (:func:`~hopstack.datasets.beir.claim_evidence`)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for item in claim_evidence(root_of(data.source), data.corpus, {q.id for q in questions}):
        found.setdefault(item.claim_id, []).extend((item.doc_id, item.sentences[i]) for _, i in item.rationales)
    return [replace(q, extra={**q.extra, "supporting_sentences": found.get(q.id, [])}) for q in questions]


def _content_words(text: str) -> set[str]:
    return set(normalize_answer(text).split()) - STOPWORDS


def clue_candidates(item: Ranked, dataset_format: str) -> Ranked:
    """A question's candidate sentences (the clues of its first-stage chunks), hardest first: by the number of
    the question's content words they hold, ties in chunk order; with their gold flags."""
    clues = sentence_clues(item.documents)
    words = _content_words(item.question.question)
    ordered = sorted(clues, key=lambda clue: -len(words & _content_words(clue.content or "")))  # stable
    gold = evidence(item.question, dataset_format)
    return Ranked(item.question, ordered, [is_gold_sentence(clue, gold) for clue in ordered], item.dataset)


def clue_metrics(gold: list[list[bool]], scores: list[np.ndarray]) -> dict[str, float]:
    """Mean MRR@10 (the first gold sentence's rank) and Recall@5 (the share of the gold sentences in the top 5)
    of each question's candidate sentences ordered by its scores (ties: candidate order)."""
    mrr, recall = [], []
    for flags, values in zip(gold, scores):
        order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")
        ranks = [rank for rank, i in enumerate(order.tolist(), start=1) if flags[i]]
        mrr.append(1 / ranks[0] if ranks and ranks[0] <= 10 else 0.0)
        recall.append(sum(rank <= 5 for rank in ranks) / max(len(ranks), 1))
    n = max(len(gold), 1)
    return {"MRR@10": sum(mrr) / n, "Recall@5": sum(recall) / n}


def minilm_scores(items: list[Ranked], device: str) -> list[np.ndarray]:
    """MiniLM cosine (ClueExtractor's default scorer) of each question's candidate sentences."""
    scorer = make_scorer(MINILM, device)
    scorer.warm_up()
    scores = score_all(scorer, candidate_pairs(items), "hopstack train clues")
    return split_by_sizes(scores, [len(r.documents) for r in items])


def held_out_report(model, held_out: list[Ranked], config: ClueTraining) -> dict[str, Any] | None:
    """The held-out questions' clue metrics (:func:`clue_metrics`) by the trained scorer and by MiniLM
    cosine, over the questions with a gold sentence among their candidates; None without any."""
    judged = [r for r in held_out if any(r.gold)]
    if not judged:
        return None
    gold = [r.gold for r in judged]
    trained = trained_scores(model, judged, config)
    return {
        "n_questions": len(judged),
        "candidates_per_question": round(sum(len(r.documents) for r in judged) / len(judged), 1),
        "gold_per_question": round(sum(sum(g) for g in gold) / len(judged), 2),
        "metrics": {
            "clue_scorer": clue_metrics(gold, trained),
            "minilm": clue_metrics(gold, minilm_scores(judged, config.device)),
        },
    }


def train_clues(
    config: ClueTraining,
    resume: bool = False,
    force: bool = False,
    status: Status | None = None,
    progress: Progress | None = None,
    report: StepReport | None = None,
) -> dict[str, Any]:
    """Train a clue scorer (module docstring) into ``$HOPSTACK_HOME/models/NAME``; returns its manifest. Bad
    input is refused before anything is written; an interrupted run keeps its checkpoints in
    :func:`~hopstack.training.reranker.partial_dir` for ``resume``."""
    status = status or (lambda message: None)
    check_request(config, resume, force)
    status(f"loading the base model {config.base}")
    model = load_base(config, bi_encoder=config.bi_encoder)
    sets = [
        replace(part, ranked=[clue_candidates(r, part.data.format) for r in part.ranked])
        for part in training_sets(config, with_sentence_gold, status, progress)
    ]
    candidates = [c for part in sets for c in part.ranked]
    held_out = [c for c in candidates if is_held_out(c.question.id, config.dev_share)]
    pairs = make_pairs(sets, config)
    if not pairs:
        raise HopstackInputError(
            f"{', '.join(part.data.source for part in sets)}: no training question has a gold sentence among its "
            f"top {config.depth} chunks"
        )
    pairs = with_teacher_scores(pairs, config, status)
    folder = partial_dir(config.out)
    start_folder(folder, pairs, resume)
    status(f"training on {len(pairs)} pairs from {pair_questions(pairs)} question(s)")
    train = fit_bi_encoder if config.bi_encoder else fit
    seconds = train(model, pairs, config, folder, resume, report or (lambda step, steps, loss: None))
    save_trained(model, config, folder)
    status(f"ranking the sentences of {len(held_out)} held-out question(s) with the clue scorer and MiniLM")
    dev = held_out_report(model, held_out, config)
    manifest = {
        "name": config.out,
        "role": "clue scorer (bi-encoder)" if config.bi_encoder else "clue scorer",
        "cross_encoder": not config.bi_encoder,
        "bi_encoder": config.bi_encoder,
        "base_model": config.base,
        **dataset_records(sets, config, "without_gold_sentence"),
        "gold_sentences": {"rule": GOLD_RULE, "sentences": sum(sum(c.gold) for c in candidates)},
        "training_pairs": pairs_record(pairs),
        "negatives": {"pipeline": str(config.negatives), "rule": NEGATIVES_RULE},
        "teacher": teacher_spec(config.teacher) if config.teacher else None,
        "hyperparameters": {**hyperparameters(config), "loss": loss_name(config)},
        "seconds": round(seconds, 1),
        "pairs_per_second": round(len(pairs) * config.epochs / seconds, 2) if seconds else None,
        "dev": dev,
        "command": command_line("clues", config),
        "hopstack_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    install(folder, manifest)
    return manifest
