"""A generic benchmark folder: ``questions.jsonl`` (the questions file of :mod:`hopstack.datasets.questions`:
``{"id", "question", "answers": [...], "gold_ids": [...]}`` lines) beside ``corpus.jsonl``
(``{"id", "title", "text"}`` lines). The shipped sample, ``hopstack/data/sample``, is one.
"""

from pathlib import Path

from hopstack.datasets.base import BenchmarkQuestion
from hopstack.datasets.questions import read_questions

QUESTIONS_FILE = "questions.jsonl"
CORPUS_FILE = "corpus.jsonl"


def load_questions(source: Path, corpus: Path) -> list[BenchmarkQuestion]:
    """A generic benchmark's questions (``source``, a questions file) checked against its ``corpus``; a
    ``type`` key becomes the question type."""
    questions = []
    for q in read_questions(source, corpus):
        extra = dict(q.extra)
        question_type = str(extra.pop("type", ""))
        questions.append(BenchmarkQuestion(q.id, q.question, q.answers, q.gold_ids, [], question_type, extra))
    return questions
