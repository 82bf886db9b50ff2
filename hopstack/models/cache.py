"""An on-disk cache of model calls (docs/concepts/caching.md): a repeated evaluation makes no model calls.

Entries live in one SQLite file (``$HOPSTACK_HOME/cache/calls.sqlite`` by default), keyed by the
sha256 of the model's identity, the call's kind and parameters, and the one input; values are JSON, each
signed (:class:`SignedStore`) so that an edited entry is computed again, never served.
``HOPSTACK_CACHE=off`` (or ``enabled=False``) turns it off. Safe to use from several threads.
"""

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hopstack.core.settings import cache_enabled, cache_home
from hopstack.core.spec import NestedComponents
from hopstack.models.llm import Prompt

logger = logging.getLogger(__name__)


def call_key(identity: dict[str, Any], item: Any) -> str:
    """The cache key of one input under one model and parameter set."""
    payload = json.dumps({"identity": identity, "item": item}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class SignedStore:
    """A SQLite file of entries signed with a keyed BLAKE2 digest, the base of the call cache and the node cache.

    The key (random, made once, owner-only) lives beside the file as ``NAME.key``; an entry that does not
    verify (edited, or from a file made elsewhere) is never served. A file that is not a SQLite database is
    reported once, naming it, and the store turns itself off; nothing is lost but time.
    """

    kind = "store"
    schema: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()

    def __init__(self, path: Path, enabled: bool | None = None):
        self.enabled = cache_enabled() if enabled is None else enabled
        self.path = Path(path)
        self.damaged = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._secret: bytes | None = None
        self._reported: set[str] = set()

    def _connection(self) -> sqlite3.Connection | None:
        """The open database (call with the lock held), or None, and the store off, when the file is not one."""
        if self._db is None and self.enabled:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
                db.execute("PRAGMA journal_mode=WAL")
                for statement in self.schema:
                    db.execute(statement)
            except (sqlite3.DatabaseError, OSError) as exc:
                self.report(
                    "file",
                    f"{self.kind} {self.path} cannot be used ({exc}); running without it. Delete the file "
                    "(`hopstack cache clear`) or pass --no-cache to stop this message",
                )
                self.enabled = False
                return None
            self._db = db
        return self._db

    def sign(self, *parts: str) -> str:
        """The keyed digest of an entry's parts."""
        if self._secret is None:
            key_file = self.path.with_name(self.path.name + ".key")
            if not key_file.exists():
                descriptor = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "wb") as handle:
                    handle.write(os.urandom(32))
            self._secret = key_file.read_bytes()
        return hmac.new(self._secret, "\0".join(parts).encode("utf-8"), hashlib.blake2b).hexdigest()

    def verifies(self, mac: str, *parts: str) -> bool:
        """Whether ``mac`` is the entry's signature."""
        return hmac.compare_digest(mac, self.sign(*parts))

    def report(self, what: str, message: str) -> None:
        """Log ``message`` once per store and kind of problem."""
        if what not in self._reported:
            self._reported.add(what)
            logger.warning(message)

    def info(self) -> dict[str, Any]:
        """The file, its size and its rows per table."""
        rows = {}
        if self.path.exists():
            with self._lock:
                db = self._connection()
                for table in self.tables if db is not None else ():
                    rows[table] = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"kind": self.kind, "path": str(self.path), "bytes": size, "rows": rows}

    def clear(self) -> None:
        """Delete the file (and its write-ahead log); the key stays."""
        self.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    def close(self) -> None:
        """Close the database connection (it reopens on the next use)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class CallCache(SignedStore):
    """A key-value store of JSON results in SQLite; ``enabled=None`` follows ``$HOPSTACK_CACHE``, True or
    False forces it on or off. Components get theirs from :func:`call_cache`."""

    kind = "call cache"
    schema = ("CREATE TABLE IF NOT EXISTS calls_v2 (key TEXT PRIMARY KEY, value TEXT NOT NULL, mac TEXT NOT NULL)",)
    tables = ("calls_v2",)

    def __init__(self, path: str | Path | None = None, enabled: bool | None = None):
        super().__init__(Path(path) if path else cache_home() / "calls.sqlite", enabled)

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The cached values of those ``keys`` that are present and verify (others are reported once)."""
        found: dict[str, Any] = {}
        with self._lock:
            if not keys or self._connection() is None:
                return {}
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, value, mac in self._db.execute(
                    f"SELECT key, value, mac FROM calls_v2 WHERE key IN ({marks})", chunk
                ):
                    if self.verifies(mac, key, value):
                        found[key] = json.loads(value)
                    else:
                        self.damaged += 1
                        self.report("entry", f"call cache {self.path}: an entry does not verify; computed again")
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        """Store results under their keys."""
        with self._lock:
            if not items or self._connection() is None:
                return
            rows = [(key, text, self.sign(key, text)) for key, text in ((k, json.dumps(v)) for k, v in items.items())]
            self._db.executemany("INSERT OR REPLACE INTO calls_v2 VALUES (?, ?, ?)", rows)
            self._db.commit()

    def verify(self, remove: bool = False) -> tuple[int, int]:
        """``(entries checked, entries that do not verify)``; with ``remove`` the latter are deleted."""
        with self._lock:
            if self._connection() is None:
                return 0, 0
            rows = self._db.execute("SELECT key, value, mac FROM calls_v2").fetchall()
            bad = [key for key, value, mac in rows if not self.verifies(mac, key, value)]
            if remove and bad:
                self._db.executemany("DELETE FROM calls_v2 WHERE key = ?", [(k,) for k in bad])
                self._db.commit()
        return len(rows), len(bad)

    def cached_map(
        self, identity: dict[str, Any], items: Sequence[Any], compute: Callable[[list], list], chunk: int | None = None
    ) -> list:
        """``compute(items)`` through the cache: only the misses are computed, in one call, or in calls of
        ``chunk`` items each stored as soon as it is done (an interrupted run keeps what it computed)."""
        keys = [call_key(identity, item) for item in items]
        found = self.get_many(keys)
        missing = [i for i, key in enumerate(keys) if key not in found]
        step = chunk if chunk and self.enabled else max(1, len(missing))
        for start in range(0, len(missing), step):
            part = missing[start : start + step]
            computed = compute([items[i] for i in part])
            fresh = {keys[i]: value for i, value in zip(part, computed)}
            self.put_many(fresh)
            found.update(fresh)
        return [found[key] for key in keys]


_SHARED: dict[Path, CallCache] = {}
_SHARED_LOCK = threading.Lock()


def call_cache(requested: bool = True) -> CallCache | None:
    """The call cache a component with ``cache: requested`` uses: the process's one cache at
    ``$HOPSTACK_HOME/cache/calls.sqlite``, or None when the component's ``cache`` is false or
    ``$HOPSTACK_CACHE`` is off."""
    if not cache_enabled(requested):
        return None
    path = cache_home() / "calls.sqlite"
    with _SHARED_LOCK:
        if path not in _SHARED:
            _SHARED[path] = CallCache(path, enabled=True)
        return _SHARED[path]


LLM_CACHE_CHUNK = 16  # prompts per LLM call through the cache: a long batch is saved as it goes


class CachedLLM:
    """An LLM whose ``generate`` and ``score`` go through a :class:`CallCache`.

    ``calls`` counts prompts sent to the model, ``hits`` prompts answered from the cache.
    """

    def __init__(self, llm: Any, cache: CallCache | None = None):
        self.llm = llm
        self.cache = cache or CallCache(enabled=False)
        self.calls = 0
        self.hits = 0

    def _identity(self, kind: str, **params: Any) -> dict[str, Any]:
        return {
            "backend": type(self.llm).__name__,
            "model": self.llm.model,
            "n_ctx": self.llm.n_ctx,
            "kind": kind,
            **params,
        }

    def generate(
        self,
        prompts: Sequence[Prompt],
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int = 0,
    ) -> list[str]:
        """``generate`` with cached results per prompt."""
        identity = self._identity(
            "generate", max_tokens=max_tokens, temperature=temperature, stop=list(stop or []), seed=seed
        )
        return self._cached(identity, prompts, lambda p: self.llm.generate(p, max_tokens, temperature, stop, seed))

    def score(self, prompts: Sequence[Prompt], candidates: Sequence[str]) -> list[list[float]]:
        """``score`` with cached results per prompt."""
        identity = self._identity("score", candidates=list(candidates))
        return self._cached(identity, prompts, lambda p: self.llm.score(p, candidates))

    def generate_scored(self, prompts: Sequence[Prompt], max_tokens: int = 32) -> list[tuple[str, list[float]]]:
        """``generate_scored`` with cached results per prompt."""
        identity = self._identity("generate_scored", max_tokens=max_tokens)
        results = self._cached(identity, prompts, lambda p: self.llm.generate_scored(p, max_tokens))
        return [(text, list(log_probs)) for text, log_probs in results]

    def _cached(self, identity: dict[str, Any], prompts: Sequence[Prompt], compute: Callable[[list], list]) -> list:
        before = self.calls

        def counted(missing: list) -> list:
            self.calls += len(missing)
            return compute(missing)

        results = self.cache.cached_map(identity, list(prompts), counted, chunk=LLM_CACHE_CHUNK)
        self.hits += len(prompts) - (self.calls - before)
        return results


class LLMUser(NestedComponents):
    """Mixin for whatever calls an LLM: ``use_llm`` checks the spec (loads nothing), ``warm_up`` loads the
    model and puts the call cache in front of it as ``self._llm``."""

    def use_llm(self, llm: Any, cache: bool = True) -> None:
        """Record the LLM spec and cache switch (init parameters) and check the spec."""
        from hopstack.models.llm import make_llm

        self.llm = llm
        self.cache = cache
        self._backend = make_llm(llm)
        self._llm: CachedLLM | None = None

    def warm_up(self) -> None:
        """Load the LLM (once per process) and put the call cache in front of it."""
        if self._llm is None:
            self._backend.warm_up()
            self._llm = CachedLLM(self._backend, call_cache(self.cache))
