"""The HotpotQA format (HotpotQA, 2WikiMultihopQA): a JSON list of questions.

Each record has ``question``, ``answer``, ``supporting_facts`` = ``[[title, sentence index], ...]`` and
``context`` = ``[[title, [sentences]], ...]``; ``_id`` and ``type`` are kept when present. The corpus is
the same file: ``hopstack index`` pools the context paragraphs, one document per title with the title as
its id, so a question's gold ids are its distinct supporting-fact titles in order. The supporting facts'
sentences are kept in ``extra["supporting_sentences"]`` as ``[title, sentence]`` pairs (a fact whose index is
not in its paragraph has none): the sentence-level gold of ``hopstack train clues``.
"""

import json
from pathlib import Path

from hopstack.datasets.base import BenchmarkQuestion, checked_record, distinct
from hopstack.errors import HopstackInputError

REQUIRED = ("question", "answer", "supporting_facts", "context")
MAPPED = (*REQUIRED, "_id", "type")


def _records(path: Path) -> list:
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HopstackInputError(f"{path}: not a readable JSON file ({exc})") from exc
    if not isinstance(records, list):
        raise HopstackInputError(f"{path}: a HotpotQA-format file must be a JSON list of questions")
    return records


def _supporting_sentences(paragraphs: dict[str, object], facts: list) -> list[list[str]]:
    """``[title, sentence]`` of each supporting fact whose sentence index is in its paragraph."""
    found = []
    for title, index in facts:
        sentences = paragraphs[str(title)]
        if isinstance(sentences, list) and isinstance(index, int) and 0 <= index < len(sentences):
            found.append([str(title), str(sentences[index])])
    return found


def _question(path: Path, index: int, record: dict) -> BenchmarkQuestion:
    where = checked_record(path, index, record, "_id", REQUIRED)
    context, facts = record["context"], record["supporting_facts"]
    if not isinstance(context, list) or not all(isinstance(p, list) and len(p) == 2 for p in context):
        raise HopstackInputError(f"{where}: 'context' must be a list of [title, sentences]")
    if not isinstance(facts, list) or not all(isinstance(f, list) and len(f) == 2 for f in facts):
        raise HopstackInputError(f"{where}: 'supporting_facts' must be a list of [title, sentence index]")
    paragraphs = {str(title): sentences for title, sentences in context}
    gold_ids = distinct([str(title) for title, _ in facts])
    for title in gold_ids:
        if title not in paragraphs:
            raise HopstackInputError(f"{where}: supporting-fact title {title!r} is not in the question's context")
    return BenchmarkQuestion(
        id=str(record.get("_id", index)),
        question=str(record["question"]),
        answers=[str(record["answer"])],
        gold_ids=gold_ids,
        facts=[],
        question_type=str(record.get("type", "")),
        extra={
            **{key: value for key, value in record.items() if key not in MAPPED},
            "supporting_sentences": _supporting_sentences(paragraphs, facts),
        },
    )


def load_questions(source: Path, corpus: Path) -> list[BenchmarkQuestion]:
    """The questions of a HotpotQA-format file (``corpus`` is the same file); a malformed record, or a
    supporting fact whose title is not in its question's context, is refused naming the record."""
    questions = [_question(source, index, record) for index, record in enumerate(_records(source))]
    if not questions:
        raise HopstackInputError(f"{source}: no questions")
    return questions


def records_by_question(source: Path) -> dict[str, dict]:
    """The raw records of a HotpotQA-format file by question id (the id :func:`load_questions` gives), for
    what the questions do not keep: the context paragraphs, the supporting facts, 2WikiMultihopQA's triples."""
    return {str(record.get("_id", i)): record for i, record in enumerate(_records(source)) if isinstance(record, dict)}
