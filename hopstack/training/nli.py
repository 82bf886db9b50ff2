"""``hopstack train nli``: the natural-logic prover's operator model, a three-class NLI cross-encoder trained
on datasets' train splits (docs/methods/natural-logic.md#trained-operators).

1. Pairs ``(premise: an evidence sentence, hypothesis: a claim, label)`` with the labels entailment, neutral
   and contradiction come from what the datasets say about their sentences (:func:`nli_pairs`):

   - **SciFact-style claims** (a BEIR folder holding ``claims_*.jsonl``; only the claims of the split's
     questions are read): a rationale sentence of a SUPPORT abstract entails the claim, one of a CONTRADICT
     abstract contradicts it; the other sentences of those abstracts sharing the most words with the claim
     (at most ``neutrals``), and those of the abstracts a claim without evidence cites, are neutral.
     APPROXIMATION: SciFact numbers rationale sentences in its own sentence split, hopstack splits the
     abstract text with blingfire; of the sentences at the rationale's index and its two neighbours, the one
     sharing most words with the claim is taken. A supported claim negated (:func:`negated_claim`) is
     contradicted by its rationale sentence (DATA AUGMENTATION).
   - **Wikidata triples** (HotpotQA-format records with ``evidences``, as 2WikiMultihopQA has, one per
     supporting fact): the supporting sentence entails the triple's claim "The RELATION of SUBJECT is
     OBJECT."; the same claim with OBJECT replaced by another object of that relation (from another
     question of the split) is contradicted by it (DATA AUGMENTATION: the triples carry no contradictions);
     the paragraph's other sentences (at most ``neutrals``, most shared words first) are neutral.

   MultiHop-RAG gives no pairs: its evidence facts support parts of long multi-source questions, not a claim
   that a single sentence could entail.
   Every claim-level pair also gives chunk-level pairs (:func:`chunk_pairs`): the hypotheses the prover
   asks about are claim chunks.
2. A share ``dev_share`` of the questions (by a hash of their id) is held out of training.
3. A sentence-transformers ``CrossEncoder`` with three labels, initialised from ``base``, is trained with the
   library's ``CrossEncoderTrainer`` and ``CrossEntropyLoss``, a checkpoint per epoch (``resume`` continues).
4. The held-out pairs' accuracy, macro-F1 and confusion matrix go to the manifest.

The model is built in ``$HOPSTACK_HOME/models/.NAME.partial`` and moved to ``$HOPSTACK_HOME/models/NAME``
when done, like every ``hopstack train`` model.
"""

import random
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hopstack import __version__
from hopstack.components.stopping import chunk_claim, content_words
from hopstack.datasets.base import canonical_split
from hopstack.datasets.beir import claim_evidence, root_of, shared_words
from hopstack.datasets.benchmark import BenchmarkDataset, load_dataset
from hopstack.datasets.hotpotqa import records_by_question
from hopstack.errors import HopstackInputError
from hopstack.models.cross_encoder import NLI_LABELS
from hopstack.training.reranker import (
    ModelTraining,
    Status,
    StepReport,
    check_output,
    command_line,
    hyperparameters,
    install,
    is_held_out,
    load_base,
    pairs_sha256,
    partial_dir,
    run_trainer,
    save_trained,
    start_folder,
)

# opposite pairs for negating a claim (DATA AUGMENTATION, :func:`negated_claim`), each way round
_OPPOSITES = {
    "increase": "decrease", "increases": "decreases", "increased": "decreased", "increasing": "decreasing",
    "higher": "lower", "more": "less", "greater": "smaller", "positive": "negative", "positively": "negatively",
    "promotes": "inhibits", "promote": "inhibit", "activates": "inhibits", "improves": "worsens",
    "enhances": "impairs", "up-regulates": "down-regulates", "upregulates": "downregulates",
    "raises": "lowers", "induces": "prevents", "effective": "ineffective", "beneficial": "harmful",
}  # fmt: skip
OPPOSITES = {**_OPPOSITES, **{b: a for a, b in _OPPOSITES.items()}, "reduces": "increases", "reduced": "increased"}
AUXILIARIES = frozenset("is are was were can could may might will would should has have had does do did".split())
TRIPLE_CLAIM = "The {relation} of {subject} is {object}."


@dataclass(kw_only=True)
class NliTraining(ModelTraining):
    """What ``hopstack train nli`` trains: the datasets (no index: the pairs come from the dataset files),
    the neutral sentences per claim, and the cross-encoder's hyper-parameters."""

    neutrals: int = 2
    epochs: int = 2
    max_length: int = 128
    learning_rate: float = 1e-4


def _most_shared(sentences: list[str], claim: str, count: int) -> list[str]:
    """The ``count`` sentences sharing the most words with ``claim`` (ties: document order)."""
    return sorted(sentences, key=lambda s: -shared_words(s, claim))[:count]


def _pair(
    data: BenchmarkDataset, question_id: str, premise: str, hypothesis: str, label: str, original: str | None = None
) -> dict[str, Any]:
    """A claim-level pair; ``original``: the supported claim a made-up contradiction was changed from."""
    pair = {"dataset": data.name, "id": question_id, "premise": premise, "hypothesis": hypothesis, "label": label}
    return {**pair, "grain": "claim", **({"original": original} if original else {})}


def scifact_pairs(data: BenchmarkDataset, neutrals: int) -> list[dict[str, Any]]:
    """Pairs from SciFact-style claim files beside a BEIR set's qrels (module docstring), for the claims
    that are questions of ``data``'s split."""
    pairs = []
    for item in claim_evidence(root_of(data.source), data.corpus, {q.id for q in data.questions}):
        for label, index in item.rationales:
            nli_label = "entailment" if label == "SUPPORT" else "contradiction"
            sentence = item.sentences[index]
            pairs.append(_pair(data, item.claim_id, sentence, item.claim, nli_label))
            negated = negated_claim(item.claim) if nli_label == "entailment" else None
            if negated:
                pairs.append(_pair(data, item.claim_id, sentence, negated, "contradiction", item.claim))
        used = {index for _, index in item.rationales}
        others = [s for j, s in enumerate(item.sentences) if j not in used]
        neutral = _most_shared(others, item.claim, neutrals)
        pairs += [_pair(data, item.claim_id, s, item.claim, "neutral") for s in neutral]
    return pairs


def negated_claim(claim: str) -> str | None:
    """The claim turned into its contradiction, for augmenting the contradiction class (SciFact's own
    contradicted claims were written by negating supported ones): its first word with an opposite in
    :data:`OPPOSITES` swapped for it, else "not" put after its first auxiliary verb; None when neither
    applies or the claim already says "not" there."""
    words = claim.split(" ")
    for i, word in enumerate(words):
        stripped = word.strip(".,;:()").casefold()
        if stripped in OPPOSITES:
            core, opposite = word.strip(".,;:()"), OPPOSITES[stripped]
            words[i] = word.replace(core, opposite.capitalize() if core[:1].isupper() else opposite)
            return " ".join(words)
    for i, word in enumerate(words[:-1]):
        if word.casefold() in AUXILIARIES:
            if words[i + 1].casefold() in ("not", "no", "never"):
                return None
            return " ".join([*words[: i + 1], "not", *words[i + 1 :]])
    return None


def triple_claim(triple: list[str]) -> str:
    """A Wikidata (subject, relation, object) triple as a declarative claim (:data:`TRIPLE_CLAIM`)."""
    subject, relation, obj = (str(part) for part in triple)
    return TRIPLE_CLAIM.format(relation=relation, subject=subject, object=obj)


def triple_pairs(data: BenchmarkDataset, neutrals: int, seed: int) -> list[dict[str, Any]]:
    """Pairs from HotpotQA-format records' ``evidences`` triples and supporting facts (module docstring);
    a record whose triples and supporting facts do not pair up one to one gives none."""
    records = records_by_question(data.source)
    objects: dict[str, list[str]] = {}
    for question in data.questions:
        for triple in records[question.id].get("evidences") or []:
            objects.setdefault(str(triple[1]), []).append(str(triple[2]))
    rng = random.Random(seed)
    pairs = []
    for question in data.questions:
        record = records[question.id]
        triples, facts = record.get("evidences") or [], record["supporting_facts"]
        if not triples or len(triples) != len(facts):
            continue
        paragraphs = {str(title): sentences for title, sentences in record["context"]}
        for triple, (title, index) in zip(triples, facts):
            sentences = paragraphs.get(str(title), [])
            if not (isinstance(index, int) and 0 <= index < len(sentences)):
                continue
            claim, evidence = triple_claim(triple), str(sentences[index])
            pairs.append(_pair(data, question.id, evidence, claim, "entailment"))
            others = sorted({o for o in objects[str(triple[1])] if o.casefold() != str(triple[2]).casefold()})
            if others:
                swapped = triple_claim([triple[0], triple[1], rng.choice(others)])
                pairs.append(_pair(data, question.id, evidence, swapped, "contradiction", claim))
            rest = [str(s) for j, s in enumerate(sentences) if j != index]
            pairs += [_pair(data, question.id, s, claim, "neutral") for s in _most_shared(rest, claim, neutrals)]
    return pairs


def chunk_pairs(pairs: list[dict[str, Any]], max_chunks: int = 6) -> list[dict[str, Any]]:
    """Pairs at the prover's grain, (evidence sentence, claim chunk) with the claim cut as the prover cuts it
    (:func:`~hopstack.components.stopping.chunk_claim`), derived from claim-level ``pairs``:

    - entailment: every chunk of the claim is entailed (the sentence supports the whole claim);
    - a contradiction made by changing a supported claim (``original``): its chunks that are not chunks of
      the original are contradicted, the others entailed; SciFact's own contradictions give none (which
      chunk contradicts is not known);
    - neutral: of the chunks sharing no content word with the sentence (a chunk whose words the sentence has
      may well be entailed by it), the one with the most content words is neutral.

    Each (sentence, chunk, label) comes once."""
    derived: dict[tuple[str, str, str], dict[str, Any]] = {}
    for pair in pairs:
        chunks = chunk_claim(pair["hypothesis"], max_chunks)
        if pair["label"] == "entailment":
            labels = ["entailment"] * len(chunks)
        elif pair["label"] == "contradiction" and "original" in pair:
            kept = set(chunk_claim(pair["original"], max_chunks))
            labels = ["entailment" if chunk in kept else "contradiction" for chunk in chunks]
        elif pair["label"] == "neutral":
            sentence = content_words(pair["premise"])
            unrelated = [c for c in chunks if content_words(c) and not content_words(c) & sentence]
            chunks = sorted(unrelated, key=lambda c: -len(content_words(c)))[:1]
            labels = ["neutral"] * len(chunks)
        else:
            continue
        for chunk, label in zip(chunks, labels):
            if chunk != pair["hypothesis"]:
                item = {**pair, "hypothesis": chunk, "label": label, "grain": "chunk"}
                item.pop("original", None)
                derived.setdefault((pair["premise"], chunk, label), item)
    return list(derived.values())


def nli_pairs(data: BenchmarkDataset, neutrals: int, seed: int = 0) -> list[dict[str, Any]]:
    """``{"dataset", "id", "premise", "hypothesis", "label", "grain"}`` pairs of a dataset's split (module
    docstring): the claim-level pairs and the chunk-level pairs :func:`chunk_pairs` derives from them; a
    dataset that gives none is refused, saying why."""
    if data.format == "beir":
        pairs = scifact_pairs(data, neutrals)
    elif data.format == "hotpotqa":
        pairs = triple_pairs(data, neutrals, seed)
    else:
        raise HopstackInputError(
            f"{data.source}: hopstack train nli reads SciFact-style claims (BEIR with claims_*.jsonl) or "
            f"HotpotQA-format records with Wikidata 'evidences' triples; {data.name!r} ({data.format}) has neither"
        )
    if not pairs:
        raise HopstackInputError(f"{data.source}: no question of the {data.name} split gives an NLI pair")
    return pairs + chunk_pairs(pairs)


def fit_classifier(model, pairs: list[dict[str, Any]], config: NliTraining, folder, resume: bool, report: StepReport):
    """Train the three-label cross-encoder on ``pairs`` with the library's trainer and CrossEntropyLoss
    (labels indexed as :data:`NLI_LABELS`); returns the seconds spent (this run's part when resumed)."""
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import CrossEntropyLoss

    order = list(range(len(pairs)))
    random.Random(config.seed).shuffle(order)  # the datasets' pairs mixed, as the trainer reads in order per epoch
    columns = {
        "premise": [pairs[i]["premise"] for i in order],
        "hypothesis": [pairs[i]["hypothesis"] for i in order],
        "label": [NLI_LABELS.index(pairs[i]["label"]) for i in order],
    }
    trainer = (CrossEncoderTrainer, CrossEncoderTrainingArguments)
    return run_trainer(trainer, model, columns, CrossEntropyLoss(model), config, folder, resume, report)


def classification_report(gold: list[str], predicted: list[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 over :data:`NLI_LABELS` and the confusion matrix (gold -> predicted -> count)."""
    f1 = []
    for label in NLI_LABELS:
        hits = sum(g == p == label for g, p in zip(gold, predicted))
        total = sum(g == label for g in gold) + sum(p == label for p in predicted)
        f1.append(2 * hits / total if total else 0.0)
    return {
        "pairs": len(gold),
        "accuracy": sum(g == p for g, p in zip(gold, predicted)) / max(len(gold), 1),
        "macro_f1": sum(f1) / len(f1),
        "confusion": {g: {p: sum(x == (g, p) for x in zip(gold, predicted)) for p in NLI_LABELS} for g in NLI_LABELS},
    }


def held_out_report(model, held_out: list[dict[str, Any]], config: NliTraining) -> dict[str, Any] | None:
    """The trained model's predictions on the held-out pairs against their labels; None without any."""
    if not held_out:
        return None
    logits = model.predict(
        [(p["premise"], p["hypothesis"]) for p in held_out], batch_size=config.batch_size * 2, show_progress_bar=False
    )
    predicted = [NLI_LABELS[i] for i in np.asarray(logits).argmax(axis=1).tolist()]
    return classification_report([p["label"] for p in held_out], predicted)


def train_nli(
    config: NliTraining,
    resume: bool = False,
    force: bool = False,
    status: Status | None = None,
    progress=None,
    report: StepReport | None = None,
) -> dict[str, Any]:
    """Train the NLI operator model (module docstring) into ``$HOPSTACK_HOME/models/NAME``; returns its
    manifest. Bad input is refused before anything is written; an interrupted run keeps its checkpoints in
    :func:`~hopstack.training.reranker.partial_dir` for ``resume``."""
    status = status or (lambda message: None)
    check_output(config, resume, force)
    if not config.dataset:
        raise HopstackInputError("give at least one --dataset")
    if len(set(config.dataset)) != len(config.dataset):
        raise HopstackInputError(f"--dataset names a dataset twice: {', '.join(config.dataset)}")
    if config.neutrals < 0:
        raise HopstackInputError(f"--neutrals must be 0 or more, got {config.neutrals}")
    pairs, datasets = [], []
    for name in config.dataset:
        status(f"reading NLI pairs from {name} ({config.split})")
        data = load_dataset(name, config.split, config.limit)
        found = nli_pairs(data, config.neutrals, config.seed)
        pairs += found
        counts = {label: sum(p["label"] == label for p in found) for label in NLI_LABELS}
        datasets.append({"name": data.name, "source": data.source.name, "questions": len(data.questions), **counts})
    held_out = [p for p in pairs if is_held_out(p["id"], config.dev_share)]
    training = [p for p in pairs if not is_held_out(p["id"], config.dev_share)]
    if not training:
        raise HopstackInputError("every NLI pair's question is held out (--dev-share): nothing to train on")
    status(f"loading the base model {config.base}")
    model = load_base(config, num_labels=len(NLI_LABELS))
    model.model.config.id2label = dict(enumerate(NLI_LABELS))
    model.model.config.label2id = {label: i for i, label in enumerate(NLI_LABELS)}
    folder = partial_dir(config.out)
    start_folder(folder, training, resume)
    status(f"training on {len(training)} pairs ({len(held_out)} held out)")
    seconds = fit_classifier(model, training, config, folder, resume, report or (lambda step, steps, loss: None))
    save_trained(model, config, folder)
    status(f"predicting the {len(held_out)} held-out pairs")
    manifest = {
        "name": config.out,
        "role": "NLI operator model",
        "cross_encoder": True,
        "labels": list(NLI_LABELS),
        "base_model": config.base,
        "dataset": "+".join(d["name"] for d in datasets),
        "split": canonical_split(config.split),
        "datasets": datasets,
        "training_pairs": {
            "file": "training_pairs.jsonl",
            "sha256": pairs_sha256(training),
            "pairs": len(training),
            **{label: sum(p["label"] == label for p in training) for label in NLI_LABELS},
        },
        "hyperparameters": {**hyperparameters(config), "loss": "CrossEntropyLoss"},
        "seconds": round(seconds, 1),
        "pairs_per_second": round(len(training) * config.epochs / seconds, 2) if seconds else None,
        "dev": held_out_report(model, held_out, config),
        "command": command_line("nli", config),
        "hopstack_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    install(folder, manifest)
    return manifest
