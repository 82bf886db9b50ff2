"""The BEIR layout (SciFact and the other BEIR sets): ``corpus.jsonl``, ``queries.jsonl``, ``qrels/*.tsv``.

The questions are the queries that a qrels file (``qrels/test.tsv`` by default, as BEIR evaluates) judges
relevant to some document; their gold ids are the corpus ids judged with a score above 0. BEIR sets have
no gold answers.

A SciFact folder also holds the original claim files (``claims_*.jsonl``) with sentence-level rationales;
:func:`claim_evidence` reads them for the models that train on sentences (``hopstack train nli`` and
``hopstack train clues``).
"""

import re
from dataclasses import dataclass
from pathlib import Path

from hopstack.core.text import split_sentences
from hopstack.datasets.base import BenchmarkQuestion, distinct
from hopstack.errors import HopstackInputError
from hopstack.index.formats import read_corpus, read_json_lines

CORPUS_FILE = "corpus.jsonl"
QUERIES_FILE = "queries.jsonl"
DEFAULT_QRELS = Path("qrels") / "test.tsv"
CLAIM_FILES = "claims_*.jsonl"
RATIONALE_LABELS = ("SUPPORT", "CONTRADICT")
_WORD = re.compile(r"\w+")


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


def shared_words(text: str, other: str) -> int:
    """How many distinct case-folded words two texts share."""
    return len(set(_WORD.findall(text.casefold())) & set(_WORD.findall(other.casefold())))


@dataclass
class ClaimEvidence:
    """A SciFact-style claim and one abstract it names: the abstract's sentences (hopstack's blingfire split)
    and its rationales as ``(label, sentence index)``, label SUPPORT or CONTRADICT, in file order; a claim
    without evidence names the abstracts it cites, with no rationales."""

    claim_id: str
    claim: str
    doc_id: str
    sentences: list[str]
    rationales: list[tuple[str, int]]


def rationale_sentence(sentences: list[str], index: int, claim: str) -> int | None:
    """The sentence of hopstack's split that a rationale's sentence ``index`` names. APPROXIMATION: SciFact
    numbers sentences in its own split, hopstack splits the abstract with blingfire; of the sentences at
    ``index`` and its two neighbours, the one sharing most words with the claim (None when none exists)."""
    near = [j for j in (index, index - 1, index + 1) if 0 <= j < len(sentences)]
    return max(near, key=lambda j: shared_words(sentences[j], claim)) if near else None


def claim_evidence(root: Path, corpus: Path, wanted: set[str]) -> list[ClaimEvidence]:
    """The claims with ids in ``wanted`` of every ``claims_*.jsonl`` file in ``root``, one
    :class:`ClaimEvidence` per (claim, abstract); no claim file, or a malformed evidence entry (named by
    file and line), is refused."""
    files = sorted(root.glob(CLAIM_FILES))
    if not files:
        raise HopstackInputError(
            f"{root}: no {CLAIM_FILES} files (SciFact's claims with SUPPORT/CONTRADICT rationales): this BEIR set "
            "has no sentence-level labels"
        )
    abstracts = {str(record["_id"]): str(record.get("text", "")) for _, record in read_json_lines(corpus)}
    found = []
    for path in files:
        for number, claim in read_json_lines(path):
            claim_id = str(claim.get("id"))
            if claim_id not in wanted:
                continue
            text = str(claim.get("claim", ""))
            evidence = claim.get("evidence") or {}
            if not isinstance(evidence, dict):
                raise HopstackInputError(f"{path}:{number}: 'evidence' must map abstract ids to rationales")
            cited = [str(d) for d in claim.get("cited_doc_ids") or []] if not evidence else []
            for doc_id in [*evidence, *cited]:
                sentences = split_sentences(abstracts.get(str(doc_id), ""))
                rationales = []
                for rationale in evidence.get(doc_id, []):
                    if rationale.get("label") not in RATIONALE_LABELS:
                        raise HopstackInputError(f"{path}:{number}: rationale label must be SUPPORT or CONTRADICT")
                    for index in rationale.get("sentences", []):
                        best = rationale_sentence(sentences, index, text)
                        if best is not None:
                            rationales.append((rationale["label"], best))
                found.append(ClaimEvidence(claim_id, text, str(doc_id), sentences, rationales))
    return found
