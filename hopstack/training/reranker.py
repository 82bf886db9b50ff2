"""``hopstack train reranker``: a cross-encoder trained on datasets' train splits (docs/methods/trained-reranker.md).

1. Each dataset's train split (one or several datasets, each with its own index) runs through a
   first-stage pipeline (``yaml/hybrid.yaml`` by default) whose last stage is deepened to ``depth``
   candidates.
2. Pairs: per question its gold candidates (as the metrics judge them, :func:`hopstack.experiments.metrics.is_gold`;
   at most ``max_positives``) labelled 1 and its best-ranked non-gold candidates (hard negatives; at most
   ``num_negatives``, one count for every dataset or one each) labelled 0. A share ``dev_share`` of the
   questions (by a hash of their id) gives no pairs: it is held out to fit the first-stage weight. With a
   ``teacher`` (any scorer spec), the teacher scores every pair too.
3. A sentence-transformers ``CrossEncoder`` initialised from ``base`` is trained on the pairs with the
   library's ``CrossEncoderTrainer``, checkpointing every epoch: on the gold labels with
   ``BinaryCrossEntropyLoss``, or, with a teacher, on (question, gold, hard negative) triplets with
   ``MarginMSELoss`` towards the teacher's score margin (Hofstaetter et al., 2020: gold says which passage is
   the positive, the teacher how far apart the two are).
4. On the held-out questions the trained scores are interpolated with the first stage's
   (:func:`hopstack.core.ranking.interpolate`) for weights 0, 0.1, ..., 1; the weight with the best MRR@10 is
   written to the manifest (``first_stage_weight``) beside the held-out metrics.
5. A LightGBM LambdaRank model is fitted over the candidates' features
   (:class:`hopstack.components.learned_ranking.RankingFeatures`: first-stage, chunk, named-field and, with a
   cross-encoder, its scores) and saved as ``ranker.txt``, for
   :class:`~hopstack.components.learned_ranking.LearnedReranker`. With ``monotone`` (the default) a better
   first-stage or scorer score or a named field can only raise a candidate, and repeating a document or field
   value ranked above it only lower it
   (:meth:`~hopstack.components.learned_ranking.RankingFeatures.monotone_directions`). With ``cross_encoder``
   off, steps 2-4 are skipped and the ranker uses the other features alone (seconds to train).
6. With a bi-encoder, a :class:`~hopstack.components.learned_ranking.DomainCheck` is fitted on the training
   questions' candidate embeddings (per dataset a centroid, and as threshold the
   ``domain_quantile`` of its questions' cosines to it), and a fallback ranker beside the main one
   (``ranker-features.txt``; no scorer and no chunk positions: :func:`fallback_features`): the reranker
   ranks questions whose candidates are unlike every training corpus by the fallback. ``domain_quantile``
   ``auto`` (the default) takes the largest of :data:`DOMAIN_QUANTILES` whose check costs the held-out
   questions nothing (:func:`choose_domain_quantile`).

The model is built in ``$HOPSTACK_HOME/models/.NAME.partial`` (checkpoints included, so an interrupted run
continues with ``resume``) and moved to ``$HOPSTACK_HOME/models/NAME`` when done.
"""

import hashlib
import json
import math
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from haystack import Document, Pipeline

from hopstack import __version__
from hopstack.components.learned_ranking import DEFAULT_NAMED_FIELDS, DomainCheck, RankingFeatures, candidate_profile
from hopstack.core.ranking import interpolate, split_by_sizes
from hopstack.core.settings import models_home
from hopstack.core.text import passage_text
from hopstack.datasets.base import BenchmarkQuestion, canonical_split
from hopstack.datasets.benchmark import BenchmarkDataset, load_dataset
from hopstack.errors import HopstackInputError
from hopstack.experiments.metrics import final_documents, is_gold
from hopstack.graphs.fingerprint import pipeline_fingerprints
from hopstack.graphs.runner import BatchRunner, Progress
from hopstack.models.devices import resolve_device
from hopstack.models.embedders import embed_texts, pair_cosines
from hopstack.models.registry import REGISTRY, TRAINED_MANIFEST, is_shipped_model, resolve_model, trained_model_dir
from hopstack.models.scorers import make_scorer, score_all
from hopstack.spec.loading import load_pipeline_data

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
PAIRS_FILE = "training_pairs.jsonl"
CHECKPOINTS = "checkpoints"
RANKER_FILE = "ranker.txt"
FALLBACK_RANKER_FILE = "ranker-features.txt"
# what only the cross-encoder reads (left out of a --no-cross-encoder model's command line)
CROSS_ENCODER_OPTIONS = (
    "base", "num_negatives", "max_positives", "epochs", "max_length", "batch_size", "learning_rate", "teacher",
    "layers", "float16", "bi_encoder", "domain_quantile",
)  # fmt: skip
WEIGHTS = tuple(i / 10 for i in range(11))
# the domain check's quantiles that ``domain_quantile: auto`` chooses among (choose_domain_quantile)
DOMAIN_QUANTILES = (0.01, 0.02, 0.05, 0.1)
MAX_DOMAIN_QUANTILE = 0.5
# LightGBM LambdaRank settings, fixed beforehand (not tuned on any test split)
LAMBDARANK = {
    "objective": "lambdarank",
    "n_estimators": 200,
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 20,
    "lambdarank_truncation_level": 10,
    "deterministic": True,
    "force_row_wise": True,
    "n_jobs": 1,
    "verbose": -1,
}
Status = Callable[[str], None]
StepReport = Callable[[int, int, float | None], None]  # (step, steps, last logged loss)


@dataclass(kw_only=True)
class ModelTraining:
    """What every ``hopstack train`` command reads: the datasets, the model's name, and the trained model's
    hyper-parameters. ``layers`` keeps the base model's first N transformer layers (:func:`keep_first_layers`);
    ``float16`` stores the weights in half precision (:func:`save_trained`). A single ``dataset`` string is one
    dataset."""

    dataset: tuple[str, ...] = field(metadata={"repeated": True})
    out: str
    split: str = "train"
    base: str = "minilm"
    epochs: int = 1
    max_length: int = 192
    batch_size: int = 16
    learning_rate: float = 4e-5
    dev_share: float = 0.2
    limit: int | None = None
    seed: int = 0
    device: str = "auto"
    layers: int | None = None
    float16: bool = False

    def __post_init__(self) -> None:
        self.dataset = (self.dataset,) if isinstance(self.dataset, str) else tuple(self.dataset)


@dataclass(kw_only=True)
class TrainingConfig(ModelTraining):
    """What the reranker and clue-scorer commands read besides :class:`ModelTraining`: each dataset's index
    and the first stage whose candidates give the hard negatives.

    ``dataset`` and ``index`` pair up by position (one index per dataset); a single string is one index.
    ``num_negatives`` is one count for every dataset or a tuple of one count per dataset, in the same order
    (:meth:`negatives_per_dataset`).
    ``teacher`` is a scorer spec (:func:`teacher_spec`) whose scores the cross-encoder is distilled from;
    ``bi_encoder`` fine-tunes the base model as a bi-encoder (:func:`fit_bi_encoder`, scoring by cosine)
    instead of training a cross-encoder.
    """

    index: tuple[str, ...] = field(metadata={"repeated": True})
    negatives: str = "yaml/hybrid.yaml"
    depth: int = 30
    num_negatives: int | tuple[int, ...] = 6
    max_positives: int = 3
    teacher: str | None = None
    bi_encoder: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.index = (self.index,) if isinstance(self.index, str) else tuple(self.index)
        if not isinstance(self.num_negatives, int):
            counts = tuple(self.num_negatives)
            self.num_negatives = counts[0] if len(counts) == 1 else counts

    def negatives_per_dataset(self) -> tuple[int, ...]:
        """The hard negatives a question of each ``dataset`` gives, in order."""
        if isinstance(self.num_negatives, int):
            return (self.num_negatives,) * len(self.dataset)
        return self.num_negatives


@dataclass(kw_only=True)
class RerankerTraining(TrainingConfig):
    """What ``hopstack train reranker`` trains: data, first stage, and hyper-parameters."""

    cross_encoder: bool = True
    named_fields: tuple[str, ...] = DEFAULT_NAMED_FIELDS
    monotone: bool = True
    domain_quantile: float | str = "auto"  # a share in [0, MAX_DOMAIN_QUANTILE], or auto: choose_domain_quantile


@dataclass
class Ranked:
    """One question's first-stage candidates, best first, which of them are gold, and its dataset's name."""

    question: BenchmarkQuestion
    documents: list[Document]
    gold: list[bool]
    dataset: str = ""


@dataclass
class TrainingSet:
    """One dataset's train split as training reads it: the data, its index, the first stage's fingerprint on
    that index, and each selected question's candidates."""

    data: BenchmarkDataset
    index: str
    fingerprint: str
    ranked: list[Ranked]

    def record(self, counts: dict[str, int]) -> dict[str, Any]:
        """The manifest's entry for this dataset: name, source file, index, fingerprint and question ``counts``."""
        return {
            "name": self.data.name,
            "source": Path(self.data.source).name,
            "index": self.index,
            "negatives_fingerprint": self.fingerprint,
            "questions": counts,
        }


def partial_dir(name: str) -> Path:
    """Where a model is built (and its checkpoints kept) until training finishes."""
    return models_home() / f".{name}.partial"


def check_output(config: ModelTraining, resume: bool, force: bool) -> None:
    """Refuse, before anything is read or written, what every ``hopstack train`` command refuses: a bad model
    name, a split other than train, a bad ``dev_share``, a model that exists (without ``force`` or
    ``resume``) or a ``resume`` with nothing to resume."""
    if not NAME.fullmatch(config.out):
        raise HopstackInputError(f"--out {config.out!r}: a model name is letters, digits, '.', '_' and '-'")
    if config.out in REGISTRY or is_shipped_model(config.out):
        raise HopstackInputError(f"--out {config.out!r} is a registry or shipped model's name; choose another")
    if canonical_split(config.split) != "train":
        raise HopstackInputError(f"hopstack train reads only a train split (--split train), got {config.split!r}")
    if not 0 <= config.dev_share < 1:
        raise HopstackInputError(f"dev_share must be in [0, 1), got {config.dev_share}")
    if resume and force:
        raise HopstackInputError("--resume and --force exclude each other")
    if resume and not (partial_dir(config.out) / CHECKPOINTS).is_dir():
        raise HopstackInputError(f"--resume: no interrupted training of {config.out!r} in {partial_dir(config.out)}")
    if trained_model_dir(config.out).exists() and not (force or resume):
        raise HopstackInputError(
            f"model {config.out!r} exists ({trained_model_dir(config.out)}); pass --force to replace it"
        )
    if partial_dir(config.out).exists() and not (force or resume):
        raise HopstackInputError(
            f"an interrupted training of {config.out!r} is in {partial_dir(config.out)}; pass --resume to continue "
            "it or --force to start over"
        )


def check_request(config: TrainingConfig, resume: bool, force: bool) -> None:
    """:func:`check_output`, and refuse datasets and indexes that do not pair up or an unknown teacher."""
    if not config.dataset or len(config.dataset) != len(config.index):
        raise HopstackInputError(
            f"give one --index per --dataset, in the same order: {len(config.dataset)} dataset(s), "
            f"{len(config.index)} index(es)"
        )
    counts = config.negatives_per_dataset()
    if len(counts) != len(config.dataset) or min(counts) < 1:
        raise HopstackInputError(
            f"--num-negatives {','.join(map(str, counts))}: give one count of at least 1, or one per --dataset in the "
            f"same order ({len(config.dataset)} dataset(s))"
        )
    if len(set(config.dataset)) != len(config.dataset):
        raise HopstackInputError(f"--dataset names a dataset twice: {', '.join(config.dataset)}")
    if config.teacher is not None:
        make_scorer(teacher_spec(config.teacher), config.device)  # an unknown type is refused here, unloaded
    check_output(config, resume, force)


def load_base(config: ModelTraining, bi_encoder: bool = False, num_labels: int = 1):
    """The base model as a ``CrossEncoder`` with ``num_labels`` outputs (a bi-encoder such as MiniLM gets a
    new head), or with ``bi_encoder`` as a ``SentenceTransformer`` reading ``max_length`` tokens a text."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.cross_encoder import CrossEncoder

    try:
        import datasets  # noqa: F401  (the trainer reads a datasets.Dataset)
    except ImportError as exc:
        raise HopstackInputError("hopstack train needs the datasets package: pip install 'hopstack[train]'") from exc

    path = resolve_model(config.base)
    try:
        device = resolve_device(config.device)
        if bi_encoder:
            model = SentenceTransformer(path, device=device, local_files_only=True)
            model.max_seq_length = config.max_length
        else:
            model = CrossEncoder(
                path, num_labels=num_labels, max_length=config.max_length, device=device, local_files_only=True
            )
    except (OSError, ValueError) as exc:
        kind = "a bi-encoder" if bi_encoder else "a cross-encoder"
        raise HopstackInputError(f"--base {config.base!r}: cannot load it as {kind} ({exc})") from exc
    if config.layers is not None:
        keep_first_layers(model, config.layers, config.base)
    return model


def keep_first_layers(model, layers: int, base: str) -> None:
    """Cut a cross-encoder's transformer to its first ``layers`` layers (top-layer dropping, which Sajjad et
    al., 2023, "On the effect of dropping layers of pre-trained transformer models", found the best way to
    shrink a model before fine-tuning): proportionally less compute a pair, fewer weights to store."""
    transformer = transformer_of(model)
    encoder = getattr(transformer.base_model, "encoder", None)
    stack = getattr(encoder, "layer", None)
    if stack is None:
        raise HopstackInputError(f"--layers: the base model {base!r} has no encoder.layer stack to cut")
    if not 1 <= layers <= len(stack):
        raise HopstackInputError(f"--layers {layers}: the base model {base!r} has {len(stack)} layers")
    encoder.layer = stack[:layers]
    transformer.config.num_hidden_layers = layers


def transformer_of(model):
    """The Hugging Face transformer inside a sentence-transformers ``CrossEncoder`` or ``SentenceTransformer``."""
    return model.model if hasattr(model, "predict") else model[0].auto_model


def save_trained(model, config: ModelTraining, folder: Path) -> None:
    """Save the trained model into ``folder``; with ``float16`` its weights are rounded to float16 first (half
    the size on disk; the scores computed afterwards, and by every user, read the rounded weights)."""
    if config.float16:
        model.half()
    model.save_pretrained(str(folder), create_model_card=False)
    model.float()


def labelled(data: BenchmarkDataset) -> list[BenchmarkQuestion]:
    """The split's questions that have gold labels (MultiHop-RAG: evidence facts; others: gold ids); an empty
    split or one with no labels at all is refused."""
    if not data.questions:
        raise HopstackInputError(f"{data.source}: the train split has no questions")
    label = "facts" if data.format == "multihop-rag" else "gold_ids"
    found = [q for q in data.questions if getattr(q, label)]
    if not found:
        raise HopstackInputError(f"{data.source}: no question of the train split has {label}: nothing to learn from")
    return found


def teacher_spec(text: str) -> dict[str, Any]:
    """The scorer spec a ``--teacher`` names: a YAML mapping ``{type: ..., init_parameters: {...}}`` (any
    hopstack scorer: ``llm``, ``llm-graded``, ``cross-encoder``, ...) or a model name, id or path, read as
    ``{type: cross-encoder, init_parameters: {model: TEXT}}``."""
    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise HopstackInputError(f"--teacher {text!r}: not a model name nor a YAML scorer spec ({exc})") from exc
    if isinstance(spec, str):
        return {"type": "cross-encoder", "init_parameters": {"model": spec}}
    if not isinstance(spec, dict) or "type" not in spec:
        raise HopstackInputError(f"--teacher {text!r}: give a model name or a mapping {{type: ..., init_parameters}}")
    return spec


def _deepened(pipeline_file: str, index: str, depth: int) -> dict[str, Any]:
    """The pipeline's data pointed at ``index``, with the ``top_k`` of its last stage(s) set to ``depth``."""
    if not Path(pipeline_file).is_file():
        raise HopstackInputError(f"--negatives {pipeline_file}: no such pipeline file")
    data = load_pipeline_data(pipeline_file, {"index": index})
    senders = {c["sender"].split(".")[0] for c in data.get("connections") or []}
    for name, spec in data["components"].items():
        if name not in senders and "top_k" in (spec.get("init_parameters") or {}):
            spec["init_parameters"]["top_k"] = depth
    return data


def first_stage(
    config: TrainingConfig,
    index: str,
    data: BenchmarkDataset,
    questions: list[BenchmarkQuestion],
    progress: Progress | None,
) -> tuple[list[Ranked], str]:
    """Each question's first-stage candidates on ``index`` with gold flags, and the pipeline's fingerprint."""
    pipeline = Pipeline.from_dict(_deepened(config.negatives, index, config.depth), allowed_modules=["hopstack"])
    fingerprint = hashlib.sha256(json.dumps(pipeline_fingerprints(pipeline), sort_keys=True).encode()).hexdigest()
    runner = BatchRunner(pipeline)
    runner.warm_up()
    inputs = [runner.question_input(q.question, q.extra) for q in questions]
    result = runner.run(inputs, item_ids=[q.id for q in questions], progress=progress)
    ranked = []
    for question, outputs in zip(questions, result.outputs):
        documents = final_documents(outputs)
        ranked.append(Ranked(question, documents, [is_gold(question, d, data.format) for d in documents], data.name))
    return ranked, fingerprint


def training_sets(
    config: TrainingConfig,
    select: Callable[[BenchmarkDataset], list[BenchmarkQuestion]],
    status: Status,
    progress: Progress | None,
) -> list[TrainingSet]:
    """Each ``config.dataset``'s train split: the questions ``select`` keeps, ranked by the first stage on
    the dataset's own index. Every dataset is loaded and checked before the first stage runs."""
    loaded = []
    for name in config.dataset:
        status(f"loading {name} ({config.split})")
        data = load_dataset(name, config.split, config.limit)
        loaded.append((data, select(data)))
    sets = []
    for (data, questions), index in zip(loaded, config.index):
        status(f"ranking {len(questions)} {data.name} question(s) with {config.negatives} (top {config.depth})")
        ranked, fingerprint = first_stage(config, index, data, questions, progress)
        sets.append(TrainingSet(data, index, fingerprint, ranked))
    return sets


def is_held_out(question_id: str, dev_share: float) -> bool:
    """Whether a train question is held out of the pairs to fit the first-stage weight (a salted id hash)."""
    digest = hashlib.sha256(f"hopstack-dev:{question_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < dev_share * 2**64


def make_pairs(sets: list[TrainingSet], config: TrainingConfig, title_prefix: bool = True) -> list[dict[str, Any]]:
    """``{"dataset", "id", "query", "passage", "label"}`` pairs of the training questions (not held out) of
    ``sets``: each question's first gold candidates (label 1) and its best-ranked other candidates (label 0;
    as many as its dataset's count in :meth:`TrainingConfig.negatives_per_dataset`); a question with no gold
    candidate gives none."""
    pairs = []
    for part, count in zip(sets, config.negatives_per_dataset()):
        pairs += _question_pairs(training_questions(part.ranked, config), config.max_positives, count, title_prefix)
    return pairs


def training_questions(ranked: list[Ranked], config: TrainingConfig) -> list[Ranked]:
    """The questions of ``ranked`` that train (the others are held out: :func:`is_held_out`)."""
    return [r for r in ranked if not is_held_out(r.question.id, config.dev_share)]


def _question_pairs(ranked: list[Ranked], max_positives: int, num_negatives: int, title_prefix: bool) -> list[dict]:
    pairs = []
    for item in ranked:
        positives = [d for d, gold in zip(item.documents, item.gold) if gold][:max_positives]
        negatives = [d for d, gold in zip(item.documents, item.gold) if not gold][:num_negatives]
        if not positives:
            continue
        for document, label in [(d, 1.0) for d in positives] + [(d, 0.0) for d in negatives]:
            text = passage_text(document, title_prefix)
            pair = {"id": item.question.id, "query": item.question.question, "passage": text, "label": label}
            pairs.append({"dataset": item.dataset, **pair})
    return pairs


def with_teacher_scores(pairs: list[dict[str, Any]], config: TrainingConfig, status: Status) -> list[dict[str, Any]]:
    """``pairs`` with the teacher's score of each under ``"teacher"``; unchanged without a teacher."""
    if config.teacher is None or not pairs:
        return pairs
    teacher = make_scorer(teacher_spec(config.teacher), config.device)
    status(f"scoring {len(pairs)} pairs with the teacher {config.teacher}")
    teacher.warm_up()
    scores = score_all(teacher, [(p["query"], p["passage"]) for p in pairs], "the teacher")
    if not np.isfinite(scores).all():
        raise HopstackInputError(f"--teacher {config.teacher!r} gave a score that is not a finite number")
    return [{**p, "teacher": float(s)} for p, s in zip(pairs, scores)]


def triplets(pairs: list[dict[str, Any]]) -> dict[str, list]:
    """Per question every (query, gold, hard negative) combination of its pairs, as training columns; when
    the pairs carry teacher scores, a ``label`` column holds the teacher's margin between the two (MarginMSE)."""
    by_question: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for pair in pairs:
        by_question.setdefault((pair["dataset"], pair["id"]), []).append(pair)
    distilled = bool(pairs) and "teacher" in pairs[0]
    columns: dict[str, list] = {"query": [], "positive": [], "negative": [], **({"label": []} if distilled else {})}
    for group in by_question.values():
        for positive in (p for p in group if p["label"] == 1.0):
            for negative in (p for p in group if p["label"] == 0.0):
                columns["query"].append(positive["query"])
                columns["positive"].append(positive["passage"])
                columns["negative"].append(negative["passage"])
                if distilled:
                    columns["label"].append(positive["teacher"] - negative["teacher"])
    return columns


def scorer_kind(config: TrainingConfig) -> str:
    """What kind of scorer model ``config`` trains: ``"bi-encoder"`` or ``"cross-encoder"``."""
    return "bi-encoder" if config.bi_encoder else "cross-encoder"


def hyperparameters(config: ModelTraining) -> dict[str, Any]:
    """The manifest's ``hyperparameters``: every option of ``config``, tuples as lists (as JSON reads back)."""
    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}


def loss_name(config: TrainingConfig) -> str:
    """The sentence-transformers loss the scorer trains with (:func:`fit`, :func:`fit_bi_encoder`)."""
    if config.teacher is not None:
        return "MarginMSELoss"
    return "MultipleNegativesRankingLoss" if config.bi_encoder else "BinaryCrossEntropyLoss"


def pairs_sha256(pairs: list[dict[str, Any]]) -> str:
    """The sha256 of the pairs as the JSON lines file the model folder keeps."""
    return hashlib.sha256(_pairs_bytes(pairs)).hexdigest()


def pair_questions(pairs: list[dict[str, Any]]) -> int:
    """How many questions (of all the datasets) the pairs come from."""
    return len({(p["dataset"], p["id"]) for p in pairs})


def pairs_record(pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest's ``training_pairs`` entry: the pairs file, its sha256 and counts."""
    return {
        "file": PAIRS_FILE,
        "sha256": pairs_sha256(pairs),
        "pairs": len(pairs),
        "positives": sum(p["label"] == 1.0 for p in pairs),
        "questions": pair_questions(pairs),
        "teacher_scored": "teacher" in pairs[0] if pairs else False,
    }


def _pairs_bytes(pairs: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(p, ensure_ascii=False, sort_keys=True) + "\n" for p in pairs).encode("utf-8")


def _callback(report: StepReport):
    from transformers import TrainerCallback

    class Report(TrainerCallback):
        """Tells ``report`` each optimisation step and the last logged loss."""

        loss: float | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.loss = float(logs["loss"])

        def on_step_end(self, args, state, control, **kwargs):
            report(state.global_step, state.max_steps, self.loss)

    return Report()


def fit(model, pairs: list[dict[str, Any]], config: TrainingConfig, folder: Path, resume: bool, report: StepReport):
    """Train the cross-encoder ``model`` on ``pairs`` (:func:`run_trainer`): binary cross-entropy on the gold
    labels, or MarginMSE on :func:`triplets` when the pairs carry teacher scores. Returns the seconds spent
    (this run's part when resumed)."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss, MarginMSELoss

    if pairs and "teacher" in pairs[0]:
        columns, loss = triplets(pairs), MarginMSELoss(model)
    else:
        columns = {key: [p[key] for p in pairs] for key in ("query", "passage", "label")}
        loss = BinaryCrossEntropyLoss(model)
    trainer = (CrossEncoderTrainer, CrossEncoderTrainingArguments)
    return run_trainer(trainer, model, columns, loss, config, folder, resume, report)


def fit_bi_encoder(model, pairs: list[dict[str, Any]], config: TrainingConfig, folder: Path, resume: bool, report):
    """Fine-tune the bi-encoder ``model`` on the (question, gold, hard negative) :func:`triplets` of ``pairs``
    with the library's trainer: MultipleNegativesRankingLoss (the other questions' passages of a batch are
    negatives too; no question twice in a batch), or MarginMSE towards a teacher's margins. Returns the
    seconds spent (this run's part when resumed)."""
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer import losses
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    columns = triplets(pairs)
    loss = losses.MarginMSELoss(model) if "label" in columns else losses.MultipleNegativesRankingLoss(model)
    trainer = (SentenceTransformerTrainer, SentenceTransformerTrainingArguments)
    sampler = BatchSamplers.NO_DUPLICATES
    return run_trainer(trainer, model, columns, loss, config, folder, resume, report, batch_sampler=sampler)


def run_trainer(
    trainer_classes: tuple[type, type],
    model,
    columns: dict[str, list],
    loss,
    config: ModelTraining,
    folder: Path,
    resume: bool,
    report: StepReport,
    **arguments: Any,
) -> float:
    """Train ``model`` on ``columns`` with ``loss`` by a sentence-transformers (trainer, training arguments)
    class pair, a checkpoint per epoch in ``folder`` (``arguments``: more training arguments); returns the
    seconds spent (this run's part when resumed)."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # the caller's report shows progress
    rows = len(next(iter(columns.values())))
    if not rows:
        raise HopstackInputError("no training question has both a gold passage and a hard negative to learn from")
    steps = math.ceil(rows / config.batch_size) * config.epochs
    trainer_class, arguments_class = trainer_classes
    args = arguments_class(
        output_dir=str(folder / CHECKPOINTS),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=math.ceil(0.1 * steps),
        save_strategy="epoch",
        save_total_limit=2,
        logging_steps=max(1, min(10, steps // 20)),
        report_to="none",
        seed=config.seed,
        disable_tqdm=True,
        use_cpu=resolve_device(config.device) == "cpu",
        **arguments,
    )
    trainer = trainer_class(
        model=model, args=args, train_dataset=Dataset.from_dict(columns), loss=loss, callbacks=[_callback(report)]
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict when tqdm is off
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=True if resume else None)
    return time.perf_counter() - started


def ranking_metrics(gold: list[list[bool]], scores: list[np.ndarray]) -> dict[str, float]:
    """Mean MRR@10 and Hits@4 of each question's candidates ordered by its scores (ties: first-stage order)."""
    mrr, hits = [], []
    for flags, values in zip(gold, scores):
        order = np.argsort(-np.asarray(values, dtype=np.float64), kind="stable")
        ranks = [rank for rank, i in enumerate(order.tolist(), start=1) if flags[i]]
        mrr.append(1 / ranks[0] if ranks and ranks[0] <= 10 else 0.0)
        hits.append(float(bool(ranks) and ranks[0] <= 4))
    n = max(len(gold), 1)
    return {"MRR@10": sum(mrr) / n, "Hits@4": sum(hits) / n}


def candidate_pairs(items: list[Ranked]) -> list[tuple[str, str]]:
    """(question, ``"title. text"``) for each question's candidates: what a trained scorer reads."""
    return [(r.question.question, passage_text(d, True)) for r in items for d in r.documents]


class TextEmbeddings:
    """A bi-encoder's L2-normalised embeddings of texts, each distinct text encoded once and remembered, so
    the cosines and the :class:`~hopstack.components.learned_ranking.DomainCheck` read the same vectors.
    ``progress("embedding", done, total)`` hears how many of a call's new texts are embedded, ``step`` at a
    time."""

    def __init__(self, model, batch_size: int, progress: Progress | None = None, step: int = 1024):
        self.model = model
        self.batch_size = batch_size
        self.progress = progress
        self.step = step
        self._rows: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        """The texts' embeddings, one row each."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._rows]
        for start in range(0, len(missing), self.step):
            part = missing[start : start + self.step]
            self._rows.update(zip(part, embed_texts(self.model, part, self.batch_size, normalize=True)))
            if self.progress:
                self.progress("embedding", start + len(part), len(missing))
        return np.array([self._rows[t] for t in texts], dtype=np.float32).reshape(len(texts), -1)


def trained_scores(
    model,
    items: list[Ranked],
    config: TrainingConfig,
    progress: Progress | None = None,
    step: int = 32,
    embeddings: TextEmbeddings | None = None,
) -> list[np.ndarray]:
    """The trained scorer's score of each question's candidates: the cross-encoder's output, ``step``
    questions at a time (``progress("scoring", done, total)`` hears how many are scored), or with
    ``config.bi_encoder`` the cosine of the two texts' embeddings (:func:`cosine_scores`, through
    ``embeddings`` when given). No call cache: the model is still in its build folder."""
    if config.bi_encoder:
        return cosine_scores(embeddings or TextEmbeddings(model, config.batch_size * 2, progress), items)
    scores: list[np.ndarray] = []
    for start in range(0, len(items), step):
        part = items[start : start + step]
        pairs = candidate_pairs(part)
        predicted = model.predict(pairs, batch_size=config.batch_size * 2, show_progress_bar=False) if pairs else []
        scores += split_by_sizes(np.asarray(predicted), [len(r.documents) for r in part])
        if progress:
            progress("scoring", start + len(part), len(items))
    return scores


def is_rankable(item: Ranked) -> bool:
    """Whether the order of a question's candidates can change a ranking metric or the ranker's fit: some of
    them are gold, not all."""
    return any(item.gold) and not all(item.gold)


def latest_chunk_position(items: list[Ranked]) -> int:
    """The latest chunk position (``meta.position``) among ``items``' candidates: the ranker's
    :attr:`~hopstack.components.learned_ranking.RankingFeatures.chunk_position_limit`."""
    return max((int(d.meta.get("position") or 0) for r in items for d in r.documents), default=0)


def rankable_scores(
    model,
    items: list[Ranked],
    config: TrainingConfig,
    progress: Progress | None = None,
    embeddings: TextEmbeddings | None = None,
):
    """:func:`trained_scores` of the :func:`is_rankable` questions of ``items``; zeros for the others, whose
    order no metric and no fit reads (so their candidates are never scored)."""
    kept = iter(trained_scores(model, [r for r in items if is_rankable(r)], config, progress, embeddings=embeddings))
    return [next(kept) if is_rankable(r) else np.zeros(len(r.documents)) for r in items]


def cosine_scores(embeddings: TextEmbeddings, items: list[Ranked]) -> list[np.ndarray]:
    """A bi-encoder's cosine of each question with each of its candidates (every distinct text embedded
    once: :func:`~hopstack.models.embedders.pair_cosines`)."""
    cosines = pair_cosines(candidate_pairs(items), embeddings)
    return split_by_sizes(cosines, [len(r.documents) for r in items])


def candidate_profiles(embeddings: TextEmbeddings, items: list[Ranked]) -> list[np.ndarray]:
    """Each question's :func:`~hopstack.components.learned_ranking.candidate_profile` (what a scorer reads of
    its candidates, embedded)."""
    return [candidate_profile(embeddings([passage_text(d, True) for d in r.documents])) for r in items]


def domain_quantile_value(value: float | str) -> float | None:
    """``domain_quantile`` read: a share in [0, :data:`MAX_DOMAIN_QUANTILE`], or None for ``auto``; anything
    else is refused."""
    if value == "auto":
        return None
    try:
        quantile = float(value)
    except (TypeError, ValueError):
        quantile = math.nan
    if not 0 <= quantile <= MAX_DOMAIN_QUANTILE:
        raise HopstackInputError(f"--domain-quantile must be in [0, {MAX_DOMAIN_QUANTILE}] or auto, got {value!r}")
    return quantile


def training_profiles(embeddings: TextEmbeddings, training: list[Ranked]) -> dict[str, list[np.ndarray]]:
    """The candidate profiles of the rankable training questions, by dataset: what a
    :class:`~hopstack.components.learned_ranking.DomainCheck` is fitted on."""
    kept = [r for r in training if is_rankable(r)]
    by_dataset: dict[str, list[np.ndarray]] = {}
    for item, profile in zip(kept, candidate_profiles(embeddings, kept)):
        by_dataset.setdefault(item.dataset, []).append(profile)
    return by_dataset


def routed_scores(learned: list[np.ndarray], features_only: list[np.ndarray], familiar) -> list[np.ndarray]:
    """Each question's scores as the reranker serves them: the ranker's where the domain check trusts the
    scorer (``familiar``), the fallback's elsewhere."""
    return [own if ok else alone for own, alone, ok in zip(learned, features_only, familiar)]


def choose_domain_quantile(
    gold: list[list[bool]],
    learned: list[np.ndarray],
    features_only: list[np.ndarray],
    familiar_at: dict[float, np.ndarray],
) -> tuple[float, dict[str, Any]]:
    """``domain_quantile: auto``: the largest quantile of ``familiar_at`` (quantile -> per held-out question,
    whether the check at that quantile trusts the scorer) whose routing (the fallback's scores on the
    unfamiliar questions) reaches the held-out MRR@10 of the ranker without the check, so that the check
    rejects as much as it can at no held-out cost; the smallest quantile when none does or nothing is held
    out. Returns it and, per quantile, the held-out metrics and the number sent to the fallback."""
    if not gold:
        return min(familiar_at), {}
    baseline = ranking_metrics(gold, learned)["MRR@10"]
    by_quantile: dict[str, Any] = {}
    for quantile, familiar in sorted(familiar_at.items()):
        routed = routed_scores(learned, features_only, familiar)
        by_quantile[str(quantile)] = {**ranking_metrics(gold, routed), "unfamiliar": int(np.sum(~familiar))}
    passing = [q for q in familiar_at if by_quantile[str(q)]["MRR@10"] >= baseline - 1e-12]
    return max(passing, default=min(familiar_at)), by_quantile


def fit_domain_check(
    profiles: dict[str, list[np.ndarray]],
    quantile: float | None,
    embeddings: TextEmbeddings,
    held_out: list[Ranked],
    learned: list[np.ndarray],
    features_only: list[np.ndarray],
) -> tuple[DomainCheck, np.ndarray, dict[str, Any] | None]:
    """The domain check of the training ``profiles`` (:func:`training_profiles`) at ``quantile``; with None
    (``auto``), at the quantile :func:`choose_domain_quantile` picks from the held-out questions' ranker
    (``learned``) and fallback (``features_only``) scores. Returns the check, which held-out questions it
    trusts (:func:`held_out_familiar`) and the record of the choice (None for a given quantile)."""
    if quantile is not None:
        check = DomainCheck.fit(profiles, quantile)
        return check, held_out_familiar(check, embeddings, held_out), None
    checks = {q: DomainCheck.fit(profiles, q) for q in DOMAIN_QUANTILES}
    familiar_at = {q: held_out_familiar(check, embeddings, held_out) for q, check in checks.items()}
    chosen, by_quantile = choose_domain_quantile([r.gold for r in held_out], learned, features_only, familiar_at)
    return checks[chosen], familiar_at[chosen], {"rule": "auto", "held_out": by_quantile}


def fit_first_stage_weight(held_out: list[Ranked], trained: list[np.ndarray]) -> dict[str, Any]:
    """The first-stage weight with the best held-out MRR@10 (ties: the smaller weight) and every weight's
    metrics."""
    first = [np.array([d.score or 0.0 for d in r.documents], dtype=np.float64) for r in held_out]
    gold = [r.gold for r in held_out]
    by_weight = {str(w): ranking_metrics(gold, [interpolate(f, t, w) for f, t in zip(first, trained)]) for w in WEIGHTS}
    best = max(WEIGHTS, key=lambda w: (by_weight[str(w)]["MRR@10"], -w))
    return {"first_stage_weight": best, "by_weight": by_weight}


def command_line(command: str, config: ModelTraining, skip: tuple[str, ...] = ()) -> str:
    """The ``hopstack train COMMAND`` line that trains ``config`` again, every option spelled out: first the
    repeated ones (each dataset, then each index), then the rest; a flag ``--x/--no-x`` for a boolean, a comma
    list for another tuple; the fixed seed, unset options (no ``--limit``: all questions) and ``skip`` are
    left out."""
    words = ["hopstack", "train", command]
    for option_field in sorted(fields(config), key=lambda f: not f.metadata.get("repeated")):
        value = getattr(config, option_field.name)
        option = "--" + option_field.name.replace("_", "-")
        if option_field.name == "seed" or option_field.name in skip or value is None:
            continue
        if isinstance(value, bool):
            words.append(option if value else f"--no-{option[2:]}")
        elif option_field.metadata.get("repeated"):
            words += [word for item in value for word in (option, item)]
        else:
            words += [option, ",".join(map(str, value)) if isinstance(value, tuple) else str(value)]
    return shlex.join(words)


def _feature_matrix(
    features: RankingFeatures, items: list[Ranked], scores: list[np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The stacked features, gold labels and group sizes of ``items`` (LightGBM's ranking input)."""
    matrix = features.stacked([r.question.question for r in items], [r.documents for r in items], scores)
    labels = np.concatenate([np.asarray(r.gold, dtype=np.int32) for r in items])
    return matrix, labels, [len(r.documents) for r in items]


def lambdarank_parameters(features: RankingFeatures, monotone: bool) -> dict[str, Any]:
    """LightGBM's parameters: :data:`LAMBDARANK`, with ``monotone`` the features' monotone constraints
    (:meth:`RankingFeatures.monotone_directions`)."""
    if not monotone:
        return dict(LAMBDARANK)
    return {**LAMBDARANK, "monotone_constraints": features.monotone_directions()}


def fit_lambdarank(
    features: RankingFeatures,
    items: list[Ranked],
    scores: list[np.ndarray] | None,
    seed: int,
    parameters: dict[str, Any],
):
    """A LightGBM LambdaRank booster with ``parameters`` (:func:`lambdarank_parameters`) fitted on ``items``'
    candidates; questions without a gold candidate carry no ranking signal and are left out."""
    import lightgbm

    keep = [i for i, r in enumerate(items) if is_rankable(r)]
    if not keep:
        raise HopstackInputError("no training question has both gold and non-gold candidates to rank")
    kept_scores = None if scores is None else [scores[i] for i in keep]
    matrix, labels, groups = _feature_matrix(features, [items[i] for i in keep], kept_scores)
    ranker = lightgbm.LGBMRanker(**parameters, random_state=seed)
    ranker.fit(matrix, labels, group=groups, feature_name=features.names())
    return ranker.booster_


def learned_scores(booster, features: RankingFeatures, items: list[Ranked], scores: list[np.ndarray] | None):
    """Each question's candidates' ranker scores."""
    if not items:
        return []
    matrix, _, groups = _feature_matrix(features, items, scores)
    return split_by_sizes(booster.predict(matrix), groups)


def fallback_features(features: RankingFeatures) -> RankingFeatures:
    """The features of a bi-encoder ranker's fallback, which ranks questions from corpora unlike the training
    ones: no scorer, and no chunk positions (``chunk_position_limit`` 0: every list with a later chunk than the
    first reads 0), since what positions are worth depends on how a corpus cuts its documents."""
    return replace(features, with_scorer=False, chunk_position_limit=0)


def held_out_familiar(check: DomainCheck, embeddings: TextEmbeddings, held_out: list[Ranked]) -> np.ndarray:
    """Per held-out question, whether ``check`` trusts the scorer on it (every question that is not
    :func:`is_rankable`: its order reads nothing, and its candidates were never embedded)."""
    familiar = np.ones(len(held_out), dtype=bool)
    asked = [i for i, r in enumerate(held_out) if is_rankable(r)]
    if asked:
        familiar[asked] = check.familiar(np.array(candidate_profiles(embeddings, [held_out[i] for i in asked])))
    return familiar


def held_out_report(
    held_out: list[Ranked],
    trained: list[np.ndarray] | None,
    learned: list[np.ndarray],
    fallback: tuple[list[np.ndarray], np.ndarray] | None = None,
) -> dict[str, Any] | None:
    """MRR@10 and Hits@4 on the held-out questions of the first stage, the cross-encoder alone (``trained``),
    its best interpolation (whose weight becomes ``first_stage_weight``) and the learned ranker (its scores
    ``learned``); None without held-out questions. With ``fallback`` (the fallback ranker's scores and, per
    held-out question, whether the domain check calls it familiar), ``learned`` is what the reranker serves
    (:func:`routed_scores`), beside the fallback alone (``features_only``) and the ranker without the check."""
    if not held_out:
        return None
    gold = [r.gold for r in held_out]
    report: dict[str, Any] = {"n_questions": len(held_out)}
    metrics = {"first_stage": ranking_metrics(gold, [-np.arange(len(r.documents)) for r in held_out])}
    if trained is not None:
        fitted = fit_first_stage_weight(held_out, trained)
        metrics["reranker"] = fitted["by_weight"]["0.0"]
        metrics["interpolated"] = fitted["by_weight"][str(fitted["first_stage_weight"])]
        report.update(fitted)
    if fallback is not None:
        features_only, familiar = fallback
        metrics["features_only"] = ranking_metrics(gold, features_only)
        metrics["learned_without_domain_check"] = ranking_metrics(gold, learned)
        learned = routed_scores(learned, features_only, familiar)
        report["unfamiliar"] = int(np.sum(~np.asarray(familiar, dtype=bool)))
    metrics["learned"] = ranking_metrics(gold, learned)
    report["metrics"] = metrics
    return report


def start_folder(folder: Path, pairs: list[dict[str, Any]], resume: bool) -> None:
    """A fresh build folder holding the pairs, or, on ``resume``, a check that the pairs are the same."""
    if resume:
        recorded = json.loads((folder / "training.json").read_text(encoding="utf-8"))
        if recorded["pairs_sha256"] != pairs_sha256(pairs):
            raise HopstackInputError(f"--resume: the pairs differ from those the run in {folder} trained on")
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    if pairs:
        (folder / PAIRS_FILE).write_bytes(_pairs_bytes(pairs))
        (folder / "training.json").write_text(json.dumps({"pairs_sha256": pairs_sha256(pairs)}), encoding="utf-8")


def train_reranker(
    config: RerankerTraining,
    resume: bool = False,
    force: bool = False,
    status: Status | None = None,
    progress: Progress | None = None,
    report: StepReport | None = None,
) -> dict[str, Any]:
    """Train a reranker (module docstring) into ``$HOPSTACK_HOME/models/NAME``; returns its manifest. Bad
    input is refused before anything is written; an interrupted run keeps its checkpoints in
    :func:`partial_dir` for ``resume``."""
    status = status or (lambda message: None)
    check_request(config, resume, force)
    domain_quantile_value(config.domain_quantile)
    if not config.cross_encoder and (config.teacher is not None or config.bi_encoder):
        option = "--teacher distils into" if config.teacher is not None else "--bi-encoder fine-tunes"
        raise HopstackInputError(f"{option} the ranker's scorer model: it needs --cross-encoder")
    model = None
    if config.cross_encoder:
        status(f"loading the base model {config.base}")
        model = load_base(config, bi_encoder=config.bi_encoder)
    sets = training_sets(config, labelled, status, progress)
    ranked = [r for part in sets for r in part.ranked]
    held_out = [r for r in ranked if is_held_out(r.question.id, config.dev_share)]
    training = training_questions(ranked, config)
    folder = partial_dir(config.out)
    pairs: list[dict[str, Any]] = []
    seconds, training_scores, held_out_scores, embeddings = 0.0, None, None, None
    if model is not None:
        pairs = make_pairs(sets, config)
        if not pairs:
            raise HopstackInputError(
                f"{', '.join(part.data.source for part in sets)}: no training question has a gold passage among "
                f"its top {config.depth} candidates"
            )
        pairs = with_teacher_scores(pairs, config, status)
        start_folder(folder, pairs, resume)
        status(f"training on {len(pairs)} pairs from {pair_questions(pairs)} question(s)")
        train = fit_bi_encoder if config.bi_encoder else fit
        seconds = train(model, pairs, config, folder, resume, report or (lambda step, steps, loss: None))
        save_trained(model, config, folder)
        status(f"scoring the candidates of {len(ranked)} question(s) with the trained {scorer_kind(config)}")
        embeddings = TextEmbeddings(model, config.batch_size * 2, progress) if config.bi_encoder else None
        scores = rankable_scores(model, training + held_out, config, progress, embeddings)
        training_scores, held_out_scores = scores[: len(training)], scores[len(training) :]
    else:
        start_folder(folder, [], resume=False)
    limit = latest_chunk_position([r for r in training if is_rankable(r)])
    features = RankingFeatures(tuple(config.named_fields), with_scorer=model is not None, chunk_position_limit=limit)
    status(f"fitting the LambdaRank ranker on {len(training)} question(s)")
    started = time.perf_counter()
    parameters = lambdarank_parameters(features, config.monotone)
    booster = fit_lambdarank(features, training, training_scores, config.seed, parameters)
    booster.save_model(str(folder / RANKER_FILE))
    domain, fallback = None, None
    held_out_learned = learned_scores(booster, features, held_out, held_out_scores)
    if embeddings is not None:
        status("fitting the fallback ranker and the domain check")
        plain = fallback_features(features)
        fallback_booster = fit_lambdarank(
            plain, training, None, config.seed, lambdarank_parameters(plain, config.monotone)
        )
        fallback_booster.save_model(str(folder / FALLBACK_RANKER_FILE))
        features_only = learned_scores(fallback_booster, plain, held_out, None)
        check, familiar, choice = fit_domain_check(
            training_profiles(embeddings, training),
            domain_quantile_value(config.domain_quantile),
            embeddings,
            held_out,
            held_out_learned,
            features_only,
        )
        domain = {
            **check.to_dict(),
            **({"quantile_choice": choice} if choice else {}),
            "fallback_file": FALLBACK_RANKER_FILE,
            "fallback_features": plain.to_dict(),
        }
        fallback = (features_only, familiar)
    ranker_seconds = time.perf_counter() - started
    dev = held_out_report(held_out, held_out_scores, held_out_learned, fallback)
    manifest = {
        "name": config.out,
        "role": "learned reranker" + (f" with a {scorer_kind(config)}" if model is not None else ""),
        "cross_encoder": model is not None and not config.bi_encoder,
        "bi_encoder": model is not None and config.bi_encoder,
        "base_model": config.base if model is not None else None,
        **dataset_records(sets, config, "without_gold_candidate"),
        "training_pairs": pairs_record(pairs) if pairs else None,
        "negatives": {"pipeline": str(config.negatives)},
        "teacher": teacher_spec(config.teacher) if config.teacher and model is not None else None,
        "hyperparameters": {**hyperparameters(config), "loss": loss_name(config) if model is not None else None},
        "ranker": {
            "file": RANKER_FILE,
            "features": features.to_dict(),
            "title_prefix": True,
            "lightgbm": parameters,
            "seconds": round(ranker_seconds, 1),
            **({"domain": domain} if domain else {}),
        },
        "seconds": round(seconds + ranker_seconds, 1),
        "pairs_per_second": round(len(pairs) * config.epochs / seconds, 2) if seconds else None,
        "first_stage_weight": dev.get("first_stage_weight", 0.0) if dev else 0.0,
        "dev": dev,
        "command": command_line("reranker", config, skip=unread_options(config)),
        "hopstack_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    install(folder, manifest)
    return manifest


def unread_options(config: RerankerTraining) -> tuple[str, ...]:
    """The options a reranker's training did not read (left out of its manifest's command line): without a
    scorer model everything only it reads, without a bi-encoder the domain check's quantile."""
    if not config.cross_encoder:
        return CROSS_ENCODER_OPTIONS
    return () if config.bi_encoder else ("domain_quantile",)


def dataset_records(sets: list[TrainingSet], config: TrainingConfig, unlabelled_key: str) -> dict[str, Any]:
    """The manifest's data entries: ``dataset`` (the names joined by "+"), ``split``, the question counts in
    all (training, held out, and under ``unlabelled_key`` those without a gold candidate) and per dataset."""
    per_set = []
    for part in sets:
        held = sum(is_held_out(r.question.id, config.dev_share) for r in part.ranked)
        counts = {"training": len(part.ranked) - held, "held_out": held}
        per_set.append((part, {**counts, unlabelled_key: sum(not any(r.gold) for r in part.ranked)}))
    keys = ("training", "held_out", unlabelled_key)
    return {
        "dataset": "+".join(part.data.name for part in sets),
        "split": canonical_split(config.split),
        "questions": {key: sum(counts[key] for _, counts in per_set) for key in keys},
        "datasets": [part.record(counts) for part, counts in per_set],
    }


def install(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest`` into the build ``folder``, drop its checkpoints and move it to
    ``$HOPSTACK_HOME/models/NAME`` (NAME: the manifest's ``name``), replacing a model of that name."""
    (folder / TRAINED_MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    shutil.rmtree(folder / CHECKPOINTS, ignore_errors=True)
    (folder / "training.json").unlink(missing_ok=True)
    target = trained_model_dir(manifest["name"])
    if target.exists():
        shutil.rmtree(target)
    folder.rename(target)
