"""One entry point for every benchmark: :func:`load_dataset` and :func:`dataset_corpus`.

A dataset is given by name (``multihop-rag``, ``2wikimultihopqa``, ``scifact``, ``strategyqa``; see
:mod:`hopstack.datasets.registry`) or by path, and its format is recognised from its files:

- ``multihop-rag``: a folder with ``MultiHopRAG.json`` and ``corpus.json``;
- ``hotpotqa``: a HotpotQA-format ``.json`` file (questions with ``context``), or a folder holding one;
- ``beir``: a folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv``, or a qrels ``.tsv``
  file inside such a folder (``.../qrels/train.tsv``) to evaluate on other judgements;
- ``strategyqa``: a folder with a StrategyQA questions ``.json`` and its evidence paragraphs ``.jsonl``, or
  that questions file;
- ``generic``: a folder with ``questions.jsonl`` and ``corpus.jsonl``.

Every dataset has fixed, disjoint train and test splits (:func:`split_questions`); nothing is tuned or
trained on the questions a result is reported on.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

from hopstack.datasets import beir, generic, hotpotqa, multihop_rag, strategyqa
from hopstack.datasets.base import BenchmarkDataset, BenchmarkQuestion, canonical_split, split_by_hash, split_items
from hopstack.datasets.registry import resolve_dataset
from hopstack.errors import HopstackInputError
from hopstack.index.corpus import resolve_index_path
from hopstack.index.formats import detect_format
from hopstack.index.store import MANIFEST, is_index

__all__ = [
    "BenchmarkDataset",
    "BenchmarkQuestion",
    "dataset_corpus",
    "load_dataset",
    "locate_dataset",
    "sample_question",
]

# format -> load_questions(source, corpus)
_LOADERS = {
    "multihop-rag": multihop_rag.load_questions,
    "hotpotqa": hotpotqa.load_questions,
    "beir": beir.load_questions,
    "strategyqa": strategyqa.load_questions,
    "generic": generic.load_questions,
}


@dataclass(frozen=True)
class DatasetLocation:
    """Where a dataset's questions and corpus are, and their format."""

    name: str
    format: str
    source: Path
    corpus: Path


def _is_hotpotqa(path: Path) -> bool:
    try:
        return detect_format(path) == "hotpotqa"
    except HopstackInputError:
        return False


def _strategyqa_location(name: str, questions: Path) -> DatasetLocation:
    """A StrategyQA questions file with the one evidence-paragraphs ``.jsonl`` beside it."""
    paragraphs = [path for path in sorted(questions.parent.glob("*.jsonl")) if detect_format(path) == "strategyqa"]
    if len(paragraphs) != 1:
        found = ", ".join(path.name for path in paragraphs) or "none"
        raise HopstackInputError(
            f"{questions}: a StrategyQA questions file needs exactly one evidence-paragraphs .jsonl beside it "
            f"(lines with 'paragraph_id' and 'content'); found {found}"
        )
    return DatasetLocation(name, "strategyqa", questions, paragraphs[0])


def _locate_folder(name: str, folder: Path) -> DatasetLocation:
    queries, corpus = folder / multihop_rag.QUERIES_FILE, folder / multihop_rag.CORPUS_FILE
    if queries.is_file() and corpus.is_file():
        return DatasetLocation(name, "multihop-rag", queries, corpus)
    if (folder / beir.QUERIES_FILE).is_file() and (folder / beir.CORPUS_FILE).is_file():
        qrels = folder / beir.DEFAULT_QRELS
        if not qrels.is_file():
            raise HopstackInputError(f"{folder}: a BEIR folder without {beir.DEFAULT_QRELS}; pass a qrels file instead")
        return DatasetLocation(name, "beir", qrels, folder / beir.CORPUS_FILE)
    if (folder / generic.QUESTIONS_FILE).is_file() and (folder / generic.CORPUS_FILE).is_file():
        return DatasetLocation(name, "generic", folder / generic.QUESTIONS_FILE, folder / generic.CORPUS_FILE)
    strategy = [path for path in sorted(folder.glob("*.json")) if strategyqa.is_questions_file(path)]
    if len(strategy) == 1:
        return _strategyqa_location(name, strategy[0])
    candidates = [path for path in sorted(folder.glob("*.json")) if _is_hotpotqa(path)]
    if len(candidates) == 1:
        return DatasetLocation(name, "hotpotqa", candidates[0], candidates[0])
    if len(candidates) > 1:
        names = ", ".join(path.name for path in candidates)
        raise HopstackInputError(f"{folder}: several HotpotQA-format files ({names}); pass one of them")
    raise HopstackInputError(
        f"{folder}: no dataset recognised; expected {multihop_rag.QUERIES_FILE} + {multihop_rag.CORPUS_FILE} "
        f"(MultiHop-RAG), a HotpotQA-format .json, {beir.CORPUS_FILE} + {beir.QUERIES_FILE} + qrels/ (BEIR), "
        f"a StrategyQA questions .json + paragraphs .jsonl, or {generic.QUESTIONS_FILE} + {generic.CORPUS_FILE}"
    )


def locate_dataset(name_or_path: str) -> DatasetLocation:
    """Resolve a dataset name, folder or file to its format, questions file and corpus file."""
    name, path = resolve_dataset(name_or_path)
    if path.is_dir():
        return _locate_folder(name, path)
    if path.suffix == ".tsv":
        corpus = beir.root_of(path) / beir.CORPUS_FILE
        if not corpus.is_file():
            raise HopstackInputError(f"{path}: a qrels file must sit in the qrels/ folder of a BEIR dataset ({corpus})")
        return DatasetLocation(f"{beir.root_of(path).name}/{path.stem}", "beir", path, corpus)
    if path.suffix == ".json" and strategyqa.is_questions_file(path):
        return _strategyqa_location(name, path)
    if path.suffix == ".json" and detect_format(path) == "hotpotqa":  # a broken file raises its own error
        return DatasetLocation(name, "hotpotqa", path, path)
    raise HopstackInputError(
        f"{path}: not a dataset file; give a HotpotQA-format or StrategyQA .json, a BEIR qrels .tsv, or a dataset "
        "folder"
    )


def _qrels_splits(location: DatasetLocation) -> dict[str, Path] | None:
    """A BEIR set's own split files, ``qrels/train.tsv`` and ``qrels/test.tsv``, when it has both."""
    if location.format != "beir":
        return None
    files = {split: beir.root_of(location.source) / "qrels" / f"{split}.tsv" for split in ("train", "test")}
    return files if all(path.is_file() for path in files.values()) else None


def split_location(location: DatasetLocation, split: str) -> DatasetLocation:
    """Where a split's questions are read from: a BEIR set with ``qrels/train.tsv`` and ``qrels/test.tsv``
    (SciFact) reads its train and test splits from them, whichever qrels file was given; any other
    location is unchanged."""
    split, files = canonical_split(split), _qrels_splits(location)
    return replace(location, source=files[split]) if files and split != "all" else location


def split_questions(location: DatasetLocation, questions: list[BenchmarkQuestion], split: str) -> list:
    """The questions of ``split`` (``all``, ``train`` or its alias ``dev``, ``test``) among ``questions``,
    read from ``split_location(location, split)``:

    - MultiHop-RAG: train is every fifth query (positions 0, 5, 10, ...), test the rest;
    - a BEIR set with ``qrels/train.tsv`` and ``qrels/test.tsv`` (SciFact): each file is its split;
    - any other set (2WikiMultihopQA, StrategyQA, HotpotQA-format, generic, BEIR without those files): a hash of the
      question id puts 30% of the questions in train, the rest in test.
    """
    split = canonical_split(split)
    if split == "all" or _qrels_splits(location):
        return questions
    if location.format == "multihop-rag":
        return split_items(questions, split)
    return split_by_hash(questions, split)


def load_dataset(name_or_path: str, split: str = "all", limit: int | None = None) -> BenchmarkDataset:
    """A benchmark's questions (``split`` all, train or test, :func:`split_questions`; then the first
    ``limit``), its corpus file and the file the questions came from."""
    location = split_location(locate_dataset(name_or_path), split)
    questions = _LOADERS[location.format](location.source, location.corpus)
    return BenchmarkDataset(
        name=location.name,
        format=location.format,
        questions=split_questions(location, questions, split)[:limit],
        corpus=location.corpus,
        source=location.source,
    )


def dataset_corpus(name_or_path: str) -> Path:
    """The corpus file of a dataset, for ``hopstack index --dataset``."""
    return locate_dataset(name_or_path).corpus


def sample_question(index: str | None) -> str | None:
    """The first question of the dataset whose corpus ``index`` holds (an index folder's manifest names the
    corpus it was built from; a corpus file or folder is its own), for a form's placeholder; None when the
    corpus belongs to no dataset (a folder of one's own documents) or the index cannot be read."""
    try:
        source = resolve_index_path(index)
        if is_index(source):
            source = Path(json.loads((source / MANIFEST).read_text(encoding="utf-8"))["source"]["path"])
    except (HopstackInputError, OSError, ValueError, KeyError, TypeError):
        return None
    for candidate in [source] if source.is_dir() else [source.parent, source]:
        try:
            dataset = load_dataset(str(candidate), limit=1)
        except (HopstackInputError, OSError):
            continue
        if dataset.questions:
            return dataset.questions[0].question
    return None
