"""The on-disk cache of node outputs (docs/concepts/caching.md): a rerun of an unchanged node costs nothing.

An entry holds one node's outputs for one item, keyed by the node's fingerprint (component type, init
parameters, what it reads from disk, upstream fingerprints; see :mod:`hopstack.graphs.fingerprint`),
the digest of the item's pipeline inputs and the hopstack version. Each entry also keeps the seconds its
item took to compute, readable without the outputs, so that a cached rerun still reports what every node
costs. Entries live in one SQLite file (``$HOPSTACK_HOME/cache/nodes.sqlite`` by default).

Nothing in the file can run code or be served when it was edited:

- Outputs are stored as JSON (:func:`encode`): plain values, lists, dicts, tuples, numpy arrays (as ``.npy``
  bytes, read without pickle) and Haystack's Document, GeneratedAnswer, ExtractedAnswer and ChatMessage
  (their own ``to_dict``/``from_dict``). A value of any other type is not cached (the node runs again).
  Every Document is stored once in a table of its own under the digest of its content (without its score,
  which stays with the entry), so the hundred retrieved chunks of thousands of questions do not repeat the
  chunk texts; a document row whose content does not match its digest is damaged.
- Each entry is signed (:class:`~hopstack.models.cache.SignedStore`: a keyed BLAKE2 digest of its key,
  seconds and value; the key lives beside the file in ``NAME.key``). An entry that does not verify (edited,
  or from a file made elsewhere) is reported once, naming the file, and computed again, never served.
- A file that is not a SQLite database is reported once and the run goes on without the cache.

Past its size limit (``$HOPSTACK_CACHE_MAX_MB``, 10 GiB by default) the least recently used entries are
evicted, with the documents no remaining entry references.
"""

import base64
import hashlib
import io
import json
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from haystack import Document
from haystack.dataclasses import ChatMessage, ExtractedAnswer, GeneratedAnswer

from hopstack import __version__
from hopstack.core.settings import cache_home
from hopstack.models.cache import SignedStore, key_chunks

SKIPPED = None
"""Stored for an item the node did not run for (a branch that did not fire), so reruns skip it too."""

_HAYSTACK_TYPES = {cls.__name__: cls for cls in (GeneratedAnswer, ExtractedAnswer, ChatMessage)}


class Uncacheable(TypeError):
    """A value of a type the cache does not store."""


def default_node_cache_path() -> Path:
    """``$HOPSTACK_HOME/cache/nodes.sqlite``."""
    return cache_home() / "nodes.sqlite"


def entry_key(fingerprint: str, item_digest: str) -> str:
    """The cache key of one node's outputs for one item."""
    return hashlib.sha256(f"{__version__}\0{fingerprint}\0{item_digest}".encode()).hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def document_digest(text: str) -> str:
    """The content address of a stored document's JSON text."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).hexdigest()


def encode(value: Any, documents: dict[str, str], digests: dict[tuple, tuple[str, str]]) -> Any:
    """``value`` as JSON-ready data; the Documents it holds go into ``documents`` (digest -> JSON text) and are
    referenced by digest, ``digests`` memoises the digest and text of documents met before. Raises
    :class:`Uncacheable`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [encode(v, documents, digests) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("~") for k in value):
            return {k: encode(v, documents, digests) for k, v in value.items()}
        return {"~dict": [[encode(k, documents, digests), encode(v, documents, digests)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"~tuple": [encode(v, documents, digests) for v in value]}
    if type(value) is Document:
        return {"~doc": _store_document(value, documents, digests), "score": value.score}
    if isinstance(value, np.ndarray) and value.dtype != object:
        buffer = io.BytesIO()
        np.save(buffer, value, allow_pickle=False)
        return {"~ndarray": base64.b64encode(buffer.getvalue()).decode("ascii")}
    if type(value) in _HAYSTACK_TYPES.values():
        return {"~haystack": type(value).__name__, "data": encode(value.to_dict(), documents, digests)}
    raise Uncacheable(f"the node cache does not store {type(value).__name__}")


def _store_document(document: Document, documents: dict[str, str], digests: dict[tuple, tuple[str, str]]) -> str:
    memo = _memo_key(document)
    known = digests.get(memo) if memo else None
    if known is None:
        data = document.to_dict(flatten=False)
        data["score"] = None
        text = _canonical(data)
        known = (document_digest(text), text)
        if memo:
            digests[memo] = known
    documents.setdefault(*known)
    return known[0]


def _memo_key(document: Document) -> tuple | None:
    """An in-process key for a document without its score, or None when it has parts that do not hash.

    Retrievers return copies of the same corpus documents that share their text, so hashing the key is
    cheap (Python caches a string's hash) where encoding every copy again is not.
    """
    if document.embedding is not None or document.blob is not None or document.sparse_embedding is not None:
        return None
    key = (document.id, document.content, tuple(document.meta.items()))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def decode(value: Any, load_document: Any) -> Any:
    """The value :func:`encode` encoded; ``load_document(digest)`` gives a stored Document."""
    if isinstance(value, list):
        return [decode(v, load_document) for v in value]
    if not isinstance(value, dict):
        return value
    if "~doc" in value:
        stored = load_document(value["~doc"])
        clone = object.__new__(Document)
        clone.__dict__.update(vars(stored))
        clone.__dict__["meta"] = dict(stored.meta)
        clone.__dict__["score"] = value["score"]
        return clone
    if "~tuple" in value:
        return tuple(decode(v, load_document) for v in value["~tuple"])
    if "~dict" in value:
        return {decode(k, load_document): decode(v, load_document) for k, v in value["~dict"]}
    if "~ndarray" in value:
        return np.load(io.BytesIO(base64.b64decode(value["~ndarray"])), allow_pickle=False)
    if "~haystack" in value:
        return _HAYSTACK_TYPES[value["~haystack"]].from_dict(decode(value["data"], load_document))
    return {k: decode(v, load_document) for k, v in value.items()}


class Damaged(ValueError):
    """A cache entry or document that does not verify."""


class NodeCache(SignedStore):
    """Node outputs per item in SQLite. ``enabled=False`` (or ``HOPSTACK_CACHE=off``) makes it a no-op.

    ``hits`` and ``stores`` count entries read and written since creation, ``damaged`` entries that did not
    verify (computed again).
    """

    kind = "node cache"
    entries = "entries_v3"
    schema = (
        "CREATE TABLE IF NOT EXISTS entries_v3 (key TEXT PRIMARY KEY, seconds REAL NOT NULL, value TEXT NOT NULL, "
        "mac TEXT NOT NULL, bytes INTEGER NOT NULL, used INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS documents_v3 "
        "(digest TEXT PRIMARY KEY, value TEXT NOT NULL, bytes INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS references_v3 (key TEXT NOT NULL, digest TEXT NOT NULL, PRIMARY KEY (key, digest))",
        "CREATE INDEX IF NOT EXISTS references_v3_digest ON references_v3 (digest)",
    )
    tables = ("entries_v3", "documents_v3", "references_v3")
    sized = ("entries_v3", "documents_v3")
    obsolete = ("entries_v2", "documents_v2")

    def __init__(self, path: str | Path | None = None, enabled: bool | None = None, limit_bytes: int | None = None):
        super().__init__(Path(path) if path else default_node_cache_path(), enabled, limit_bytes)
        self.hits = 0
        self.stores = 0
        self._documents: dict[str, Document] = {}
        self._digests: dict[tuple, tuple[str, str]] = {}

    eviction_order = (  # an entry with the documents it references (an upper bound: others may share them)
        "SELECT key, bytes + (SELECT COALESCE(SUM(documents_v3.bytes), 0) FROM references_v3 JOIN documents_v3 "
        "USING (digest) WHERE references_v3.key = entries_v3.key) FROM entries_v3 ORDER BY used"
    )

    def _load_document(self, digest: str) -> Document:
        document = self._documents.get(digest)
        if document is None:
            row = self._db.execute("SELECT value FROM documents_v3 WHERE digest = ?", (digest,)).fetchone()
            if row is None or document_digest(row[0]) != digest:
                raise Damaged(f"document {digest} is missing or does not match its digest")
            document = self._documents[digest] = Document.from_dict(json.loads(row[0]))
        return document

    def _remove(self, keys: Sequence[str]) -> None:
        """Delete entries, and the documents no other entry references."""
        super()._remove(keys)
        digests = set()
        for chunk, marks in key_chunks(keys):
            digests.update(
                d for (d,) in self._db.execute(f"SELECT digest FROM references_v3 WHERE key IN ({marks})", chunk)
            )
            self._db.execute(f"DELETE FROM references_v3 WHERE key IN ({marks})", chunk)
        self._db.executemany(
            "DELETE FROM documents_v3 WHERE digest = ? AND NOT EXISTS "
            "(SELECT 1 FROM references_v3 WHERE references_v3.digest = documents_v3.digest)",
            [(d,) for d in digests],
        )
        self._documents = {d: doc for d, doc in self._documents.items() if d not in digests}

    def _value(self, key: str, seconds: float, value: str, mac: str) -> Any:
        """An entry's outputs, after its signature and its documents verify (raises otherwise)."""
        if not self.verifies(mac, key, repr(seconds), value):
            raise Damaged("its signature does not match")
        return decode(json.loads(value), self._load_document)

    def get_many(self, keys: Iterable[str]) -> dict[str, tuple[Any, float]]:
        """``(value, seconds)`` of those ``keys`` that are present and verify; an entry that does not is
        reported (once per file) and left out, so its node runs again."""
        keys = list(keys)
        found: dict[str, tuple[Any, float]] = {}
        with self._lock:
            if not keys or self._connection() is None:
                return {}
            for key, seconds, value, mac in self._select("seconds, value, mac", keys):
                try:
                    found[key] = (self._value(key, seconds, value, mac), seconds)
                except (ValueError, KeyError, TypeError) as exc:  # Damaged, bad JSON, an unknown tag
                    self.damaged += 1
                    self.report("entry", f"node cache {self.path}: an entry does not verify ({exc}); computed again")
            if found:
                self._touch(list(found))
        self.hits += len(found)
        return found

    def seconds_many(self, keys: Iterable[str]) -> dict[str, float]:
        """The stored compute seconds of those ``keys`` that are present, without reading their values."""
        keys = list(keys)
        with self._lock:
            if not keys or self._connection() is None:
                return {}
            return dict(self._select("seconds", keys))

    def put_many(self, entries: dict[str, tuple[Any, float]]) -> None:
        """Store ``(value, seconds it took to compute)`` under each key; values are node outputs
        (``{socket: value}`` or :data:`SKIPPED`) made of the types :func:`encode` takes (an entry with
        another type is left out: that node runs again next time)."""
        documents: dict[str, str] = {}
        references: list[tuple[str, str]] = []
        rows = []
        for key, (value, seconds) in entries.items():
            held: dict[str, str] = {}
            try:
                text = json.dumps(encode(value, held, self._digests), ensure_ascii=False)
            except Uncacheable as exc:
                self.report("type", f"node cache: {exc}; such outputs are computed on every run")
                continue
            rows.append((key, float(seconds), text))
            documents.update(held)
            references += [(key, digest) for digest in held]
        with self._lock:
            if not rows or self._connection() is None:
                return
            now = time.time_ns()
            signed = [
                (key, seconds, text, self.sign(key, repr(seconds), text), len(text) + len(key), now)
                for key, seconds, text in rows
            ]
            self._db.executemany(
                "INSERT OR IGNORE INTO documents_v3 VALUES (?, ?, ?)",
                [(digest, text, len(text)) for digest, text in documents.items()],
            )
            self._db.executemany("INSERT OR REPLACE INTO entries_v3 VALUES (?, ?, ?, ?, ?, ?)", signed)
            self._db.executemany("INSERT OR IGNORE INTO references_v3 VALUES (?, ?)", references)
            self._db.commit()
            self._evict()
        self.stores += len(rows)

    def verify(self, remove: bool = False) -> tuple[int, int]:
        """``(entries checked, entries that do not verify)``; with ``remove`` the latter are deleted."""
        with self._lock:
            if self._connection() is None:
                return 0, 0
            rows = self._db.execute("SELECT key, seconds, value, mac FROM entries_v3").fetchall()
            bad = []
            for key, seconds, value, mac in rows:
                try:
                    self._value(key, seconds, value, mac)
                except (ValueError, KeyError, TypeError):
                    bad.append(key)
            if remove and bad:
                self._remove(bad)
                self._db.commit()
        return len(rows), len(bad)
