"""The generic questions file: JSONL lines ``{"id", "question", "answers": [...], "gold_ids": [...]}``.

Only ``question`` is required; ``id`` defaults to the line number. Other keys are kept in ``extra``
and, when they name a pipeline input (``top_k``, say), are passed to the pipeline.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hopstack.core.text import short_repr
from hopstack.errors import HopstackInputError
from hopstack.index.formats import read_corpus, read_json_lines


@dataclass
class Question:
    """One question of a questions file."""

    id: str
    question: str
    answers: list[str] = field(default_factory=list)
    gold_ids: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def read_questions(path: str | Path, corpus: Path | None = None) -> list[Question]:
    """Read a questions JSONL file; every problem names the file and line, and nothing is half-read.

    With ``corpus`` (a JSONL corpus), every gold id must be one of its document ids.
    """
    path = Path(path)
    if not path.is_file():
        raise HopstackInputError(f"questions file {str(path)!r} does not exist")
    corpus_ids = None if corpus is None else {document.id for document in read_corpus(corpus, "jsonl")}
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for line_number, record in read_json_lines(path):
        where = f"{path}:{line_number}"
        text = record.pop("question", None)
        if not isinstance(text, str) or not text.strip():
            raise HopstackInputError(f"{where}: 'question' must be a non-empty string")
        qid = str(record.pop("id", line_number))
        if qid in seen:
            raise HopstackInputError(f"{where}: duplicate id {qid!r} (first on line {seen[qid]})")
        seen[qid] = line_number
        answers = record.pop("answers", [])
        gold_ids = record.pop("gold_ids", [])
        if not isinstance(answers, list) or not isinstance(gold_ids, list):
            raise HopstackInputError(f"{where}: 'answers' and 'gold_ids' must be lists")
        gold_ids = [str(g) for g in gold_ids]
        unknown = [g for g in gold_ids if corpus_ids is not None and g not in corpus_ids]
        if unknown:
            raise HopstackInputError(f"{where}: gold id {unknown[0]!r} is not in {corpus}")
        top_k = record.get("top_k")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise HopstackInputError(f"{where}: 'top_k' must be a whole number of at least 1, got {short_repr(top_k)}")
        questions.append(Question(qid, text, [str(a) for a in answers], gold_ids, record))
    if not questions:
        raise HopstackInputError(f"{path}: no questions")
    return questions
