"""Corpus formats that ``hopstack index`` reads, each into a list of source documents.

Supported, detected from the path and the first record:

- MultiHop-RAG ``corpus.json``: a JSON list of articles ``{title, body, url, source, published_at, ...}``;
  the id is the article's url (its evidence lists name articles by url and title).
- BEIR ``corpus.jsonl``: lines ``{"_id", "title", "text", "metadata"?}``.
- HotpotQA format (HotpotQA, 2WikiMultihopQA): a JSON list of questions with ``context`` =
  ``[[title, [sentences]], ...]``; the corpus is the pooled paragraphs, one document per title.
- StrategyQA evidence paragraphs (``.jsonl``): lines ``{"paragraph_id", "title", "content", ...meta}``; the
  id is the paragraph id its questions' evidence names.
- plain JSONL: lines ``{"id", "title"?, "text", ...meta}``.
- a folder, searched recursively: each ``.txt`` / ``.md`` file one document (id = the relative path, title =
  the first Markdown heading or the file name), each ``.jsonl`` file one document a line (plain JSONL,
  BEIR or StrategyQA paragraphs, as above; a dataset's ``questions.jsonl`` and BEIR's ``queries.jsonl`` are
  not documents and are skipped). ``.json`` files are not read in a folder: pass such a corpus file itself.

Every error names the file and, where there is one, the line or record; non-UTF-8 input, empty
corpora and duplicate ids are refused.
"""

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from hopstack.errors import HopstackInputError


@dataclass
class SourceDocument:
    """A corpus document before chunking."""

    id: str
    title: str
    text: str
    meta: dict[str, Any] = field(default_factory=dict)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise HopstackInputError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except OSError as exc:
        raise HopstackInputError(f"{path}: cannot read ({exc.strerror or exc})") from exc


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _parse_json(text: str, where: str) -> Any:
    """``text`` parsed as JSON, refusing what is not text in the end: invalid JSON, nesting too deep to
    read, and lone surrogates (``"\\ud800"`` escapes, which no UTF-8 text can hold)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise HopstackInputError(
            f"{where}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
        ) from exc
    except RecursionError:
        raise HopstackInputError(f"{where}: nested too deeply to read") from None
    if not _SURROGATE_ESCAPE.search(text):  # UTF-8 text holds no surrogates: only an escape brings one in
        return value
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HopstackInputError(f"{where}: holds a lone surrogate (an escape such as \\ud800), not text") from exc
    except RecursionError:
        raise HopstackInputError(f"{where}: nested too deeply to read") from None
    return value


def read_json_lines(path: Path) -> Iterator[tuple[int, dict]]:
    """``(line number, object)`` for each non-blank line of a JSONL file; errors name the file and line."""
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        record = _parse_json(line, f"{path}:{number}")
        if not isinstance(record, dict):
            raise HopstackInputError(f"{path}:{number}: each line must be a JSON object")
        yield number, record


def _json_document(path: Path) -> Any:
    return _parse_json(_read_text(path), str(path))


def _json_list(path: Path, what: str) -> list:
    data = _json_document(path)
    if not isinstance(data, list):
        raise HopstackInputError(f"{path}: must be a JSON list of {what}, got {type(data).__name__}")
    return data


def _first_jsonl_record(path: Path) -> dict | None:
    for _, record in read_json_lines(path):
        return record
    return None


def detect_format(path: Path) -> str:
    """The corpus format of ``path``: multihop-rag, beir, hotpotqa, strategyqa, jsonl or folder."""
    if path.is_dir():
        return "folder"
    if not path.exists():
        raise HopstackInputError(f"{path}: no such file or folder")
    if path.suffix == ".jsonl":
        first = _first_jsonl_record(path) or {}
        return "beir" if "_id" in first else "strategyqa" if "paragraph_id" in first else "jsonl"
    if path.suffix == ".json":
        data = _json_document(path)
        if isinstance(data, list) and data and isinstance(data[0], dict):
            if "body" in data[0]:
                return "multihop-rag"
            if "context" in data[0]:
                return "hotpotqa"
        raise HopstackInputError(
            f"{path}: a .json corpus must be MultiHop-RAG's corpus.json (a list of articles with 'body') or a "
            "HotpotQA-format file (a list of questions with 'context')"
        )
    raise HopstackInputError(f"{path}: unknown corpus format; use .jsonl, .json or a folder of .txt/.md/.jsonl files")


def _multihop_rag(path: Path) -> Iterator[SourceDocument]:
    for number, article in enumerate(_json_list(path, "articles"), start=1):
        if not isinstance(article, dict) or not isinstance(article.get("body"), str):
            raise HopstackInputError(f"{path}: record {number} has no 'body' text")
        meta = {k: v for k, v in article.items() if k not in ("body", "title") and v is not None}
        yield SourceDocument(str(article.get("url") or number), str(article.get("title") or ""), article["body"], meta)


def _beir(path: Path) -> Iterator[SourceDocument]:
    for number, record in read_json_lines(path):
        if "_id" not in record or not isinstance(record.get("text"), str):
            raise HopstackInputError(f"{path}:{number}: a BEIR corpus line needs '_id' and 'text'")
        meta = record.get("metadata") or {}
        if not isinstance(meta, dict):
            raise HopstackInputError(f"{path}:{number}: 'metadata' must be a JSON object")
        yield SourceDocument(str(record["_id"]), str(record.get("title") or ""), record["text"], meta)


def _hotpotqa(path: Path) -> Iterator[SourceDocument]:
    seen: set[str] = set()
    for number, question in enumerate(_json_list(path, "questions"), start=1):
        context = question.get("context") if isinstance(question, dict) else None
        if not isinstance(context, list):
            raise HopstackInputError(f"{path}: question {number} has no 'context' list")
        for paragraph in context:
            if not (isinstance(paragraph, list) and len(paragraph) == 2 and isinstance(paragraph[1], list)):
                raise HopstackInputError(f"{path}: question {number} has a context entry other than [title, sentences]")
            title, sentences = str(paragraph[0]), paragraph[1]
            if title in seen:
                continue  # the same paragraph pooled from several questions
            seen.add(title)
            yield SourceDocument(title, title, "".join(str(s) for s in sentences), {"sentences": len(sentences)})


def _strategyqa(path: Path) -> Iterator[SourceDocument]:
    for number, record in read_json_lines(path):
        if "paragraph_id" not in record or not isinstance(record.get("content"), str):
            raise HopstackInputError(f"{path}:{number}: a StrategyQA paragraph line needs 'paragraph_id' and 'content'")
        meta = {k: v for k, v in record.items() if k not in ("paragraph_id", "title", "content")}
        yield SourceDocument(str(record["paragraph_id"]), str(record.get("title") or ""), record["content"], meta)


def _jsonl(path: Path) -> Iterator[SourceDocument]:
    for number, record in read_json_lines(path):
        if "id" not in record or not isinstance(record.get("text"), str):
            raise HopstackInputError(f"{path}:{number}: a corpus line needs 'id' and 'text'")
        record = dict(record)
        doc_id, text, title = str(record.pop("id")), record.pop("text"), str(record.pop("title", "") or "")
        yield SourceDocument(doc_id, title, text, record)


FOLDER_SUFFIXES = (".txt", ".md", ".jsonl")
NOT_DOCUMENTS = ("questions.jsonl", "queries.jsonl")  # a generic dataset's questions, BEIR's queries


def folder_files(path: Path) -> list[Path]:
    """The files of a folder corpus, in reading order."""
    return sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES and p.name.lower() not in NOT_DOCUMENTS
    )


def folder_file_documents(file: Path, folder: Path) -> Iterator[SourceDocument]:
    """The documents of one file of a folder corpus: a .jsonl file's lines, or a .txt/.md file as one document
    whose id is its path in ``folder`` and whose title is its first Markdown heading (else its name)."""
    if file.suffix.lower() == ".jsonl":
        yield from _READERS[detect_format(file)](file)
        return
    text = _read_text(file)
    heading = next((line.lstrip("#").strip() for line in text.splitlines() if line.startswith("#")), "")
    relative = file.relative_to(folder).as_posix()
    yield SourceDocument(relative, heading or file.stem, text, {"path": relative})


def _folder(path: Path) -> Iterator[SourceDocument]:
    for file in folder_files(path):
        yield from folder_file_documents(file, path)


_READERS = {
    "multihop-rag": _multihop_rag,
    "beir": _beir,
    "hotpotqa": _hotpotqa,
    "strategyqa": _strategyqa,
    "jsonl": _jsonl,
    "folder": _folder,
}
FORMATS = tuple(_READERS)


Identified = TypeVar("Identified")


def read_corpus(path: str | Path, corpus_format: str | None = None) -> list[SourceDocument]:
    """Read every document of a corpus (format detected unless given); refuses empty corpora and
    duplicate ids, naming the file."""
    path = Path(path)
    corpus_format = corpus_format or detect_format(path)
    if corpus_format not in _READERS:
        raise HopstackInputError(f"unknown corpus format {corpus_format!r}; known: {', '.join(FORMATS)}")
    return unique_documents(path, corpus_format, _READERS[corpus_format](path))


def unique_documents(path: Path, corpus_format: str, documents: Iterable[Identified]) -> list[Identified]:
    """The corpus ``path``'s documents (anything with an ``id``) as a list, refusing a duplicate id and an empty
    corpus (naming the file, and for a folder what it holds instead)."""
    kept: list[Identified] = []
    seen: set[str] = set()
    for document in documents:
        if document.id in seen:
            raise HopstackInputError(f"{path}: duplicate document id {document.id!r}")
        seen.add(document.id)
        kept.append(document)
    if not kept and corpus_format == "folder":
        found = sorted(p.name for p in path.iterdir())[:5]
        hint = f" (it holds {', '.join(found)})" if found else ""
        if (path / "documents.sqlite").exists():
            hint = " (it looks like an index folder without its manifest: unfinished or damaged; rebuild it)"
        elif any(name.endswith(".json") for name in found):
            hint += "; a folder's .json files are not read: pass the .json corpus file itself"
        elif any(name.lower() in NOT_DOCUMENTS for name in found):
            hint += f"; {' and '.join(NOT_DOCUMENTS)} hold questions, not documents"
        raise HopstackInputError(f"{path}: no .txt, .md or .jsonl documents in this folder{hint}")
    if not kept:
        raise HopstackInputError(f"{path}: the corpus is empty")
    return kept


def corpus_files(path: Path) -> list[Path]:
    """The files a corpus consists of (for its content hash)."""
    return folder_files(path) if path.is_dir() else [path]
