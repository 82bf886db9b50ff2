"""The BEIR layout (SciFact and the other BEIR sets): ``corpus.jsonl``, ``queries.jsonl``, ``qrels/*.tsv``.

The questions are the queries that a qrels file (``qrels/test.tsv`` by default, as BEIR evaluates) judges
relevant to some document; their gold ids are the corpus ids judged with a score above 0. BEIR sets have
no gold answers.
"""

from pathlib import Path

from hopstack.datasets.base import BenchmarkQuestion, distinct
from hopstack.errors import HopstackInputError
from hopstack.index.formats import read_corpus, read_json_lines

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
DEFAULT_QRELS = Path("qrels") / "test.tsv"


def root_of(qrels: Path) -> Path:
    """The dataset folder of a qrels file (``ROOT/qrels/NAME.tsv``)."""
    return qrels.parent.parent


def _read_qrels(path: Path, corpus_ids: set[str]) -> dict[str, list[tuple[int, str]]]:
    """Query id -> ``(line number, corpus id)`` of each judgement with a score above 0, in file order."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise HopstackInputError(f"{path}: cannot read the qrels file ({exc})") from exc
    judged: dict[str, list[tuple[int, str]]] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if not line.strip() or (number == 1 and fields[-1].strip() == "score"):
            continue  # blank lines and the header
        if len(fields) != 3 or not fields[2].strip().lstrip("-").isdigit():
            raise HopstackInputError(f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>score', got {line!r}")
        query_id, corpus_id, score = fields[0].strip(), fields[1].strip(), int(fields[2])
        if corpus_id not in corpus_ids:
            raise HopstackInputError(f"{path}:{number}: corpus id {corpus_id!r} is not in {CORPUS_FILE}")
        if score > 0:
            judged.setdefault(query_id, []).append((number, corpus_id))
    return judged


def load_questions(source: Path, corpus: Path) -> list[BenchmarkQuestion]:
    """The queries judged relevant in the qrels file ``source``, in ``queries.jsonl`` order; a qrels line
    naming a document absent from ``corpus`` or a query absent from ``queries.jsonl`` is refused."""
    judged = _read_qrels(source, {document.id for document in read_corpus(corpus, "beir")})
    queries_file = root_of(source) / QUERIES_FILE
    if not queries_file.is_file():
        raise HopstackInputError(f"{queries_file}: BEIR queries file not found")
    questions = []
    for number, record in read_json_lines(queries_file):
        if "_id" not in record or not isinstance(record.get("text"), str):
            raise HopstackInputError(f"{queries_file}:{number}: a BEIR query line needs '_id' and 'text'")
        query_id = str(record["_id"])
        if query_id in judged:
            gold_ids = distinct([corpus_id for _, corpus_id in judged.pop(query_id)])
            questions.append(
                BenchmarkQuestion(query_id, record["text"], [], gold_ids, [], extra=dict(record.get("metadata") or {}))
            )
    if judged:
        query_id, judgements = next(iter(judged.items()))
        raise HopstackInputError(f"{source}:{judgements[0][0]}: query id {query_id!r} is not in {QUERIES_FILE}")
    if not questions:
        raise HopstackInputError(f"{source}: no query is judged relevant to any document")
    return questions
