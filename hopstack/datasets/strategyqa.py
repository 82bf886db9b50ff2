"""StrategyQA (Geva et al., 2021): yes/no questions whose answer needs an implicit multi-step strategy.

A StrategyQA folder holds a questions file (``.json``: a list of ``{"qid", "question", "answer": bool,
"facts", "decomposition", "evidence", ...}``) and its evidence paragraphs (``.jsonl``: lines
``{"paragraph_id", "title", "content"}``, the corpus ``hopstack index`` reads). ``evidence`` holds, per
annotator, per decomposition step, lists of paragraph ids or the markers ``operation`` / ``no_evidence``.
A question's gold ids are the paragraphs any annotator cited, in first-seen order; its answer is ``yes`` or
``no``; ``term``, ``description``, ``facts`` and ``decomposition`` are kept in ``extra``.
"""

import json
from pathlib import Path

from hopstack.datasets.base import BenchmarkQuestion, checked_record, distinct
from hopstack.errors import HopstackInputError
from hopstack.index.formats import read_corpus

REQUIRED = ("qid", "question", "answer", "evidence")
MARKERS = ("operation", "no_evidence")  # evidence entries that name no paragraph


def is_questions_file(path: Path) -> bool:
    """Whether ``path`` is a StrategyQA questions file (a JSON list whose first record has ``qid`` and
    ``evidence``); an unreadable file is not."""
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    first = records[0] if isinstance(records, list) and records else None
    return isinstance(first, dict) and {"qid", "evidence"} <= set(first)


def evidence_ids(evidence: object, where: str) -> list[str]:
    """The paragraph ids in a question's nested ``evidence`` lists, markers left out."""
    if isinstance(evidence, str):
        return [] if evidence in MARKERS else [evidence]
    if not isinstance(evidence, list):
        raise HopstackInputError(f"{where}: 'evidence' must hold nested lists of paragraph ids, got {evidence!r}")
    return [paragraph for entry in evidence for paragraph in evidence_ids(entry, where)]


def _question(path: Path, index: int, record: dict, corpus_ids: set[str]) -> BenchmarkQuestion:
    where = checked_record(path, index, record, "qid", REQUIRED)
    if not isinstance(record["answer"], bool):
        raise HopstackInputError(f"{where}: 'answer' must be true or false, got {record['answer']!r}")
    gold_ids = distinct(evidence_ids(record["evidence"], where))
    absent = [paragraph for paragraph in gold_ids if paragraph not in corpus_ids]
    if absent:
        raise HopstackInputError(f"{where}: evidence paragraph {absent[0]!r} is not in the paragraphs file")
    return BenchmarkQuestion(
        id=str(record["qid"]),
        question=str(record["question"]),
        answers=["yes" if record["answer"] else "no"],
        gold_ids=gold_ids,
        facts=[],
        extra={key: value for key, value in record.items() if key not in REQUIRED},
    )


def load_questions(source: Path, corpus: Path) -> list[BenchmarkQuestion]:
    """The questions of a StrategyQA questions file checked against its paragraphs file ``corpus``; a
    malformed record, or evidence naming a paragraph the corpus lacks, is refused naming the record."""
    try:
        records = json.loads(source.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HopstackInputError(f"{source}: not a readable JSON file ({exc})") from exc
    if not isinstance(records, list) or not records:
        raise HopstackInputError(f"{source}: a StrategyQA questions file must be a non-empty JSON list")
    corpus_ids = {document.id for document in read_corpus(corpus, "strategyqa")}
    return [_question(source, index, record, corpus_ids) for index, record in enumerate(records)]
