"""The benchmark records every dataset loader produces, and the fixed dev/test split."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hopstack.errors import HopstackInputError

SPLITS = ("all", "dev", "test")


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

    name: str  # "multihop-rag", "2wikimultihopqa", "scifact", or the folder/file name for paths
    format: str  # "multihop-rag" | "hotpotqa" | "beir" | "generic"
    questions: list[BenchmarkQuestion]
    corpus: Path  # the corpus file `hopstack index --dataset` reads
    source: Path  # the file the questions came from


def split_items(items: list, split: str) -> list:
    """A fixed split for tuning without peeking: ``dev`` is every fifth item (positions 0, 5, 10, ...),
    ``test`` the other four fifths, ``all`` everything."""
    if split not in SPLITS:
        raise HopstackInputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "all":
        return items
    return [item for i, item in enumerate(items) if (i % 5 == 0) == (split == "dev")]


def distinct(values: list[str]) -> list[str]:
    """``values`` without repeats, in first-seen order."""
    return list(dict.fromkeys(values))
