"""Reading corpora into Haystack ``Document`` lists.

This module reads plain JSONL corpora (one ``{"id", "title", "text", ...meta}`` object a line), which
retrievers index in memory at warm-up. Index folders built by ``hopstack index`` come with the
indexing issue; until then a folder is refused with a message that says so.
"""

import json
import os
from pathlib import Path

from haystack import Document

from hopstack.errors import HopstackInputError

INDEX_ENV_VAR = "HOPSTACK_INDEX"


def resolve_index_path(index: str | None) -> Path:
    """The corpus path a retriever reads: its ``index`` parameter, else ``$HOPSTACK_INDEX``."""
    value = index or os.environ.get(INDEX_ENV_VAR)
    if not value:
        raise HopstackInputError(
            f"no index given: set the component's 'index' init parameter, pass --index, or set ${INDEX_ENV_VAR}"
        )
    path = Path(value).expanduser()
    if not path.exists():
        raise HopstackInputError(f"index {str(path)!r} does not exist")
    if path.is_dir():
        raise HopstackInputError(
            f"index {str(path)!r} is a folder; this version reads JSONL corpus files "
            "({'id', 'title', 'text', ...} per line)"
        )
    return path


def read_jsonl_corpus(path: str | os.PathLike) -> list[Document]:
    """Read a JSONL corpus; every line needs ``id`` and ``text``; other fields go to ``meta``.

    Errors name the file and line. Duplicate ids are refused, since retrieval results are keyed by id.
    """
    documents: list[Document] = []
    seen: dict[str, int] = {}
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise HopstackInputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
            if not isinstance(record, dict) or "id" not in record or "text" not in record:
                raise HopstackInputError(f"{where}: a corpus line needs an object with 'id' and 'text'")
            doc_id = str(record.pop("id"))
            if doc_id in seen:
                raise HopstackInputError(f"{where}: duplicate id {doc_id!r} (first on line {seen[doc_id]})")
            seen[doc_id] = line_number
            text = str(record.pop("text"))
            documents.append(Document(id=doc_id, content=text, meta=record))
    if not documents:
        raise HopstackInputError(f"{path}: the corpus is empty")
    return documents


def document_text(document: Document, title_prefix: bool) -> str:
    """The text a retriever indexes: the content, prefixed by the title when asked and present."""
    title = document.meta.get("title")
    if title_prefix and title:
        return f"{title}. {document.content}"
    return document.content or ""
