"""The benchmark records every dataset loader produces, and the fixed train/test splits."""

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hopstack.errors import HopstackInputError

SPLITS = ("all", "train", "test", "dev")  # dev: the former name of train, kept as an alias
HASH_TRAIN_SHARE = 0.3  # the share of a hash-split dataset's questions in its train split


@dataclass
class BenchmarkQuestion:
    """One benchmark question with its gold labels."""

    id: str
    question: str
    answers: list[str]  # gold answers ([] when the dataset has none, e.g. SciFact)
    gold_ids: list[str]  # ids of gold SOURCE documents, as the index stores them in chunk meta["doc_id"]
    facts: list[str]  # MultiHop-RAG evidence facts ([] elsewhere)
    question_type: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchmarkDataset:
    """A benchmark's questions, the corpus to index for it, and the file the questions came from."""

    name: str  # "multihop-rag", "2wikimultihopqa", "scifact", "strategyqa", or the folder/file name for paths
    format: str  # "multihop-rag" | "hotpotqa" | "beir" | "strategyqa" | "generic"
    questions: list[BenchmarkQuestion]
    corpus: Path  # the corpus file `hopstack index --dataset` reads
    source: Path  # the file the questions came from


def canonical_split(split: str) -> str:
    """``all``, ``train`` or ``test``: ``split`` checked, ``dev`` read as ``train``."""
    if split not in SPLITS:
        raise HopstackInputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return "train" if split == "dev" else split


def split_items(items: list, split: str) -> list:
    """The positional split (MultiHop-RAG's): ``train`` (alias ``dev``) is every fifth item (positions 0, 5,
    10, ...), ``test`` the other four fifths, ``all`` everything."""
    split = canonical_split(split)
    if split == "all":
        return items
    return [item for i, item in enumerate(items) if (i % 5 == 0) == (split == "train")]


def in_hash_train(question_id: str) -> bool:
    """Whether a question belongs to the train split of a hash-split dataset: the first 8 bytes of the
    sha256 of its id, as a fraction of 2**64, below :data:`HASH_TRAIN_SHARE`."""
    digest = hashlib.sha256(question_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") < HASH_TRAIN_SHARE * 2**64


def split_by_hash(questions: list[BenchmarkQuestion], split: str) -> list[BenchmarkQuestion]:
    """The hash split (2WikiMultihopQA, StrategyQA, HotpotQA-format and generic sets): ``train`` holds the questions
    whose id hashes into the first 30% (:func:`in_hash_train`), ``test`` the others, ``all`` everything."""
    split = canonical_split(split)
    if split == "all":
        return questions
    return [q for q in questions if in_hash_train(q.id) == (split == "train")]


def checked_record(path: Path, index: int, record: object, id_key: str, required: tuple[str, ...]) -> str:
    """Where record ``index`` of the JSON list in ``path`` is (``FILE: record N (ID_KEY id)``), for errors; a
    record that is not an object or lacks a ``required`` key is refused there."""
    where = f"{path}: record {index}"
    if not isinstance(record, dict):
        raise HopstackInputError(f"{where}: not a JSON object")
    if id_key in record:
        where += f" ({id_key} {record[id_key]})"
    missing = [key for key in required if key not in record]
    if missing:
        raise HopstackInputError(f"{where}: missing {', '.join(repr(k) for k in missing)}")
    return where


def distinct(values: list[str]) -> list[str]:
    """``values`` without repeats, in first-seen order."""
    return list(dict.fromkeys(values))
