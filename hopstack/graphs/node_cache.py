"""The on-disk cache of node outputs (docs/concepts/caching.md): a rerun of an unchanged node costs nothing.

An entry holds one node's outputs for one item, keyed by the node's fingerprint (component type, init
parameters, what it reads from disk, upstream fingerprints; see :mod:`hopstack.graphs.fingerprint`),
the digest of the item's pipeline inputs and the hopstack version. Outputs are pickled; every Haystack
``Document`` in them is stored once in a table of its own (without its score, which stays with the
entry), so the hundred retrieved chunks of thousands of questions do not repeat the chunk texts.

Each entry also keeps the seconds its item took to compute, readable without the outputs, so that a
cached rerun still reports what every node costs. Entries live in one SQLite file
(``$HOPSTACK_HOME/cache/nodes.sqlite`` by default). Pickle is only ever read from this local file,
which hopstack itself writes; never point it at a file from elsewhere.
"""

import hashlib
import io
import pickle
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from haystack import Document

from hopstack import __version__
from hopstack.core.settings import cache_enabled, cache_home

SKIPPED = None
"""Stored for an item the node did not run for (a branch that did not fire), so reruns skip it too."""


def default_node_cache_path() -> Path:
    """``$HOPSTACK_HOME/cache/nodes.sqlite``."""
    return cache_home() / "nodes.sqlite"


def entry_key(fingerprint: str, item_digest: str) -> str:
    """The cache key of one node's outputs for one item."""
    return hashlib.sha256(f"{__version__}\0{fingerprint}\0{item_digest}".encode()).hexdigest()


class _DocumentPickler(pickle.Pickler):
    """Pickles Documents as references to rows of the documents table."""

    def __init__(self, file: io.BytesIO, documents: dict[str, bytes], digests: dict[tuple, str]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.documents = documents
        self.digests = digests

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is not Document:
            return None
        memo = _memo_key(obj)
        digest = self.digests.get(memo) if memo else None
        if digest is None:
            unscored = object.__new__(Document)
            unscored.__dict__.update(vars(obj))
            unscored.__dict__["score"] = None
            blob = pickle.dumps(unscored, protocol=pickle.HIGHEST_PROTOCOL)
            digest = hashlib.blake2b(blob, digest_size=16).hexdigest()
            self.documents.setdefault(digest, blob)
            if memo:
                self.digests[memo] = digest
        return ("doc", digest, obj.score)


def _memo_key(document: Document) -> tuple | None:
    """An in-process key for a document without its score, or None when it has parts that do not hash.

    Retrievers return copies of the same corpus documents that share their text, so hashing the key is
    cheap (Python caches a string's hash) where pickling every copy again is not.
    """
    if document.embedding is not None or document.blob is not None or document.sparse_embedding is not None:
        return None
    key = (document.id, document.content, tuple(document.meta.items()))
    try:
        hash(key)
    except TypeError:
        return None
    return key


class _DocumentUnpickler(pickle.Unpickler):
    """Resolves document references through a loader of document rows."""

    def __init__(self, file: io.BytesIO, load_document: Any):
        super().__init__(file)
        self.load_document = load_document

    def persistent_load(self, pid: Any) -> Any:
        _, digest, score = pid
        stored = self.load_document(digest)
        clone = object.__new__(Document)
        clone.__dict__.update(vars(stored))
        clone.__dict__["meta"] = dict(stored.meta)
        clone.__dict__["score"] = score
        return clone


class NodeCache:
    """Node outputs per item in SQLite. ``enabled=False`` (or ``HOPSTACK_CACHE=off``) makes it a no-op.

    ``hits`` and ``stores`` count entries read and written since creation.
    """

    def __init__(self, path: str | Path | None = None, enabled: bool | None = None):
        self.enabled = cache_enabled() if enabled is None else enabled
        self.path = Path(path) if path else default_node_cache_path()
        self.hits = 0
        self.stores = 0
        self._documents: dict[str, Document] = {}
        self._digests: dict[tuple, str] = {}
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, seconds REAL NOT NULL, value BLOB NOT NULL)"
            )
            self._db.execute("CREATE TABLE IF NOT EXISTS documents (digest TEXT PRIMARY KEY, value BLOB NOT NULL)")
        return self._db

    def _load_document(self, digest: str) -> Document:
        document = self._documents.get(digest)
        if document is None:
            row = self._connection().execute("SELECT value FROM documents WHERE digest = ?", (digest,)).fetchone()
            if row is None:
                raise KeyError(f"{self.path}: document {digest} is missing; delete the cache file to reset it")
            document = self._documents[digest] = pickle.loads(row[0])
        return document

    def _select(self, columns: str, keys: list[str]) -> Iterator[tuple]:
        db = self._connection()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            yield from db.execute(f"SELECT key, {columns} FROM entries WHERE key IN ({marks})", chunk)

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[Any, float]]:
        """``(value, seconds)`` of those ``keys`` that are present."""
        keys = list(keys)
        if not self.enabled or not keys:
            return {}
        with self._lock:
            found = {
                key: (_DocumentUnpickler(io.BytesIO(blob), self._load_document).load(), seconds)
                for key, seconds, blob in self._select("seconds, value", keys)
            }
        self.hits += len(found)
        return found

    def seconds_many(self, keys: Iterable[str]) -> dict[str, float]:
        """The stored compute seconds of those ``keys`` that are present, without reading their values."""
        keys = list(keys)
        if not self.enabled or not keys:
            return {}
        with self._lock:
            return dict(self._select("seconds", keys))

    def put_many(self, entries: dict[str, tuple[Any, float]]) -> None:
        """Store ``(value, seconds it took to compute)`` under each key; values are node outputs
        (``{socket: value}`` or :data:`SKIPPED`) or anything else that pickles."""
        if not self.enabled or not entries:
            return
        documents: dict[str, bytes] = {}
        rows = []
        for key, (value, seconds) in entries.items():
            buffer = io.BytesIO()
            _DocumentPickler(buffer, documents, self._digests).dump(value)
            rows.append((key, float(seconds), buffer.getvalue()))
        with self._lock:
            db = self._connection()
            db.executemany("INSERT OR IGNORE INTO documents VALUES (?, ?)", list(documents.items()))
            db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?)", rows)
            db.commit()
        self.stores += len(rows)

    def close(self) -> None:
        """Close the database connection (it reopens on the next use)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
