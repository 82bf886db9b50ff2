"""What a retriever's ``index`` parameter points at: an index folder, or a corpus file read in memory."""

import hashlib
from pathlib import Path

from haystack import Document

from hopstack.core.settings import INDEX_ENV_VAR, default_index
from hopstack.errors import HopstackInputError
from hopstack.index.formats import corpus_files, read_corpus
from hopstack.index.store import content_digest, is_index


def resolve_index_path(index: str | None) -> Path:
    """The path a retriever reads: its ``index`` parameter, else ``$HOPSTACK_INDEX``."""
    value = index or default_index()
    if not value:
        raise HopstackInputError(
            f"no index given: set the component's 'index' init parameter, pass --index, or set ${INDEX_ENV_VAR}"
        )
    path = Path(value).expanduser()
    if not path.exists():
        raise HopstackInputError(f"index {str(path)!r} does not exist")
    return path


def corpus_documents(path: Path) -> list[Document]:
    """A corpus file or folder (any format ``hopstack index`` reads) as one Document per source document,
    unchunked, for retrievers that index it in memory."""
    return [
        Document(id=d.id, content=d.text, meta={**d.meta, "doc_id": d.id, "title": d.title}) for d in read_corpus(path)
    ]


def index_identity(index: str | None) -> str:
    """What a retriever reads, as a digest that changes when the index or corpus does: an index folder's
    :func:`~hopstack.index.store.content_digest` (the same for a rebuild of the same content), or a corpus's
    file paths, sizes and modification times. Part of node fingerprints, so cached outputs of an old index are
    not reused and those of a same-content rebuild are."""
    path = resolve_index_path(index).resolve()
    if is_index(path):
        return content_digest(path)
    digest = hashlib.sha256(str(path).encode())
    for file in corpus_files(path):
        stat = file.stat()
        digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()
