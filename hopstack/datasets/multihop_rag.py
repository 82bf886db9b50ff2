"""MultiHop-RAG (Tang & Yang, COLM 2024): queries with evidence facts, and the article corpus.

The evaluation protocol is the official ``retrieval_evaluate.py``: null queries are left out (2,255 of
2,556 remain), and a retrieved chunk is relevant when one of the query's evidence facts, with spaces
and newlines removed, is a substring of the chunk's text with spaces and newlines removed.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from hopstack.datasets.base import BenchmarkQuestion, distinct
from hopstack.errors import HopstackInputError

QUERIES_FILE = "MultiHopRAG.json"
CORPUS_FILE = "corpus.json"


@dataclass
class MultiHopRagQuery:
    """One MultiHop-RAG query."""

    id: str
    question: str
    answer: str
    question_type: str
    facts: list[str]
    evidence_urls: list[str]


def load_queries(folder: str | Path, include_null: bool = False) -> list[MultiHopRagQuery]:
    """The queries of ``folder/MultiHopRAG.json`` in file order, ids ``q0000``...; null queries only when
    ``include_null``."""
    path = Path(folder) / QUERIES_FILE
    if not path.is_file():
        raise HopstackInputError(f"{path}: MultiHop-RAG queries not found")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HopstackInputError(f"{path}: not a readable JSON file ({exc})") from exc
    queries = []
    for number, record in enumerate(records):
        if not isinstance(record, dict) or "query" not in record or "evidence_list" not in record:
            raise HopstackInputError(f"{path}: record {number} lacks 'query' or 'evidence_list'")
        if record.get("question_type") == "null_query" and not include_null:
            continue
        evidence = record["evidence_list"]
        queries.append(
            MultiHopRagQuery(
                id=f"q{number:04d}",
                question=record["query"],
                answer=str(record.get("answer", "")),
                question_type=str(record.get("question_type", "")),
                facts=[e["fact"] for e in evidence],
                evidence_urls=[e.get("url", "") for e in evidence],
            )
        )
    return queries


def load_questions(source: Path, corpus: Path) -> list[BenchmarkQuestion]:
    """The non-null queries of ``source`` (a ``MultiHopRAG.json``) as benchmark questions; the gold ids are
    the evidence articles' urls, which ``hopstack index`` uses as document ids."""
    return [
        BenchmarkQuestion(
            id=q.id,
            question=q.question,
            answers=[q.answer],
            gold_ids=distinct(q.evidence_urls),
            facts=q.facts,
            question_type=q.question_type,
        )
        for q in load_queries(source.parent)
    ]
