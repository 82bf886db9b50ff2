"""An on-disk cache of model calls (docs/concepts/caching.md): a repeated evaluation makes no model calls.

Entries live in one SQLite file (``$HOPSTACK_HOME/cache/calls.sqlite`` by default), keyed by the
sha256 of the model's identity, the call's kind and parameters, and the one input; values are JSON, each
signed (:class:`SignedStore`) so that an edited entry is computed again, never served. Each entry keeps the
seconds it took, so that a node served by the cache is still charged what it costs (:func:`saved_compute`);
past its size limit the least recently used entries are evicted. ``HOPSTACK_CACHE=off`` (or
``enabled=False``) turns it off. Safe to use from several threads.
"""

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from hopstack.core.settings import cache_enabled, cache_home, cache_limit_bytes
from hopstack.core.spec import NestedComponents
from hopstack.models.llm import Prompt

logger = logging.getLogger(__name__)
TOUCH_INTERVAL_NS = 60 * 10**9  # how stale an entry's last-use time may get before a read rewrites it
SQL_CHUNK = 500  # keys per "IN (?, ...)" statement (SQLite limits a statement's parameters)


def key_chunks(keys: Sequence[str]) -> Iterator[tuple[list[str], str]]:
    """``keys`` in chunks of :data:`SQL_CHUNK`, each with its ``?,?,...`` placeholders."""
    for start in range(0, len(keys), SQL_CHUNK):
        chunk = list(keys[start : start + SQL_CHUNK])
        yield chunk, ",".join("?" * len(chunk))


def call_key(identity: dict[str, Any], item: Any) -> str:
    """The cache key of one input under one model and parameter set."""
    payload = json.dumps({"identity": identity, "item": item}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class SavedCompute:
    """The seconds that model calls served by the call cache took when they were computed."""

    def __init__(self) -> None:
        self.seconds = 0.0


_SAVED: ContextVar[SavedCompute | None] = ContextVar("hopstack_saved_compute", default=None)


@contextmanager
def saved_compute() -> Iterator[SavedCompute]:
    """A meter of the compute seconds that call-cache hits save inside the block (the batched runner puts
    one around every node call); a meter opened inside another adds its seconds to the outer one too."""
    outer = _SAVED.get()
    meter = SavedCompute()
    token = _SAVED.set(meter)
    try:
        yield meter
    finally:
        _SAVED.reset(token)
        if outer is not None:
            outer.seconds += meter.seconds


class SignedStore:
    """A SQLite file of signed entries with a size limit, the base of the call cache and the node cache.

    - Each entry is signed with a keyed BLAKE2 digest. The key (random, made once, owner-only) lives beside
      the file as ``NAME.key``; an entry that does not verify (edited, or from a file made elsewhere) is
      never served.
    - The file holds at most ``limit_bytes`` of entries (default :func:`~hopstack.core.settings.cache_limit_bytes`,
      read when it is checked): past it, the least recently used entries are evicted down to 90% of it.
      Every sized table has a ``bytes`` column that triggers add to a running total, so checking the size
      reads one row.
    - A file that is not a SQLite database is reported once, naming it, and the store turns itself off;
      nothing is lost but time.

    A subclass names its table of entries (``entries``, with ``key``, ``bytes`` and ``used`` columns),
    all its ``tables`` (those with a ``bytes`` column count towards the limit: ``sized``), the ``schema``
    that creates them and, when evicting an entry frees more than its row, the ``eviction_order``.
    """

    kind = "store"
    entries = ""
    schema: tuple[str, ...] = ()
    tables: tuple[str, ...] = ()
    sized: tuple[str, ...] = ()
    obsolete: tuple[str, ...] = ()  # tables of earlier versions, dropped when the file is opened

    @property
    def eviction_order(self) -> str:
        """SQL for ``(key, bytes evicting it frees)`` of every entry, least recently used first."""
        return f"SELECT key, bytes FROM {self.entries} ORDER BY used"

    def __init__(self, path: Path, enabled: bool | None = None, limit_bytes: int | None = None):
        self.enabled = cache_enabled() if enabled is None else enabled
        self.path = Path(path)
        self.limit_bytes = limit_bytes
        self.damaged = 0
        self.evicted = 0
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._secret: bytes | None = None
        self._reported: set[str] = set()
        self._touched: dict[str, int] = {}  # key -> when this store last marked it used (ns)

    def _connection(self) -> sqlite3.Connection | None:
        """The open database (call with the lock held), or None, and the store off, when the file is not one."""
        if self._db is None and self.enabled:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, check_same_thread=False, timeout=60)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA recursive_triggers=ON")  # INSERT OR REPLACE then fires the delete trigger
                for statement in self._statements():
                    db.execute(statement)
                db.commit()
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

    def _statements(self) -> list[str]:
        statements = [f"DROP TABLE IF EXISTS {table}" for table in self.obsolete]
        statements += [*self.schema, f"CREATE INDEX IF NOT EXISTS {self.entries}_used ON {self.entries} (used)"]
        statements += [
            "CREATE TABLE IF NOT EXISTS size (total INTEGER NOT NULL)",
            "INSERT INTO size SELECT 0 WHERE NOT EXISTS (SELECT 1 FROM size)",
        ]
        for table in self.sized:
            statements += [
                f"CREATE TRIGGER IF NOT EXISTS {table}_added AFTER INSERT ON {table} "
                "BEGIN UPDATE size SET total = total + NEW.bytes; END",
                f"CREATE TRIGGER IF NOT EXISTS {table}_removed AFTER DELETE ON {table} "
                "BEGIN UPDATE size SET total = total - OLD.bytes; END",
            ]
        return statements

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

    def _select(self, columns: str, keys: Sequence[str]) -> Iterator[tuple]:
        """``(key, *columns)`` of those ``keys`` that are present (call with the lock held)."""
        for chunk, marks in key_chunks(keys):
            yield from self._db.execute(f"SELECT key, {columns} FROM {self.entries} WHERE key IN ({marks})", chunk)

    def _touch(self, keys: Sequence[str]) -> None:
        """Mark entries as used now (call with the lock held). An entry this store marked less than
        :data:`TOUCH_INTERVAL_NS` ago is left as it is, so a hot entry read on every request costs no write."""
        now = time.time_ns()
        stale = [key for key in keys if now - self._touched.get(key, 0) >= TOUCH_INTERVAL_NS]
        if not stale:
            return
        self._db.executemany(f"UPDATE {self.entries} SET used = ? WHERE key = ?", [(now, key) for key in stale])
        self._db.commit()
        if len(self._touched) > 100_000:
            self._touched.clear()
        self._touched.update(dict.fromkeys(stale, now))

    def _remove(self, keys: Sequence[str]) -> None:
        """Delete entries (call with the lock held; a subclass also deletes what only they referenced)."""
        self._db.executemany(f"DELETE FROM {self.entries} WHERE key = ?", [(key,) for key in keys])

    def _stored_bytes(self) -> int:
        return self._db.execute("SELECT total FROM size").fetchone()[0]

    def _evict(self) -> None:
        """Evict the least recently used entries while the file holds more than its limit (lock held)."""
        limit = self.limit_bytes or cache_limit_bytes()
        total = self._stored_bytes()
        if total <= limit:
            return
        goal = int(limit * 0.9)
        while total > goal:
            victims, freed = [], 0
            for key, size in self._db.execute(self.eviction_order):
                victims.append(key)
                freed += size
                if total - freed <= goal:
                    break
            if not victims:
                break
            self._remove(victims)
            self._db.commit()
            self.evicted += len(victims)
            total = self._stored_bytes()

    def info(self) -> dict[str, Any]:
        """The file, its size on disk, the bytes its entries hold, its limit and its rows per table."""
        rows, stored = {}, 0
        if self.path.exists():
            with self._lock:
                db = self._connection()
                if db is not None:
                    rows = {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in self.tables}
                    stored = self._stored_bytes()
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        limit = self.limit_bytes or cache_limit_bytes()
        return {
            "kind": self.kind,
            "path": str(self.path),
            "bytes": size,
            "stored": stored,
            "limit": limit,
            "rows": rows,
        }

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
    False forces it on or off. Components get theirs from :func:`call_cache`.

    Each entry keeps the seconds its result took to compute; a hit adds them to the :func:`saved_compute`
    meter of the node at work, so that what a node costs does not depend on what the cache held.
    """

    kind = "call cache"
    entries = "calls_v3"
    schema = (
        "CREATE TABLE IF NOT EXISTS calls_v3 (key TEXT PRIMARY KEY, value TEXT NOT NULL, seconds REAL NOT NULL, "
        "mac TEXT NOT NULL, bytes INTEGER NOT NULL, used INTEGER NOT NULL)",
    )
    tables = sized = ("calls_v3",)
    obsolete = ("calls_v2",)

    def __init__(self, path: str | Path | None = None, enabled: bool | None = None, limit_bytes: int | None = None):
        super().__init__(Path(path) if path else cache_home() / "calls.sqlite", enabled, limit_bytes)

    def get_many(self, keys: Sequence[str]) -> dict[str, tuple[Any, float]]:
        """``(value, seconds it took)`` of those ``keys`` that are present and verify (others are reported once)."""
        found: dict[str, tuple[Any, float]] = {}
        with self._lock:
            if not keys or self._connection() is None:
                return {}
            for key, value, seconds, mac in self._select("value, seconds, mac", keys):
                if self.verifies(mac, key, repr(seconds), value):
                    found[key] = (json.loads(value), seconds)
                else:
                    self.damaged += 1
                    self.report("entry", f"call cache {self.path}: an entry does not verify; computed again")
            if found:
                self._touch(list(found))
        return found

    def put_many(self, items: dict[str, Any], seconds: float = 0.0) -> None:
        """Store results under their keys, each having taken ``seconds`` to compute."""
        with self._lock:
            if not items or self._connection() is None:
                return
            now, seconds = time.time_ns(), float(seconds)
            rows = []
            for key, value in items.items():
                text = json.dumps(value)
                rows.append((key, text, seconds, self.sign(key, repr(seconds), text), len(text) + len(key), now))
            self._db.executemany("INSERT OR REPLACE INTO calls_v3 VALUES (?, ?, ?, ?, ?, ?)", rows)
            self._db.commit()
            self._evict()

    def verify(self, remove: bool = False) -> tuple[int, int]:
        """``(entries checked, entries that do not verify)``; with ``remove`` the latter are deleted."""
        with self._lock:
            if self._connection() is None:
                return 0, 0
            rows = self._db.execute("SELECT key, value, seconds, mac FROM calls_v3").fetchall()
            bad = [key for key, value, seconds, mac in rows if not self.verifies(mac, key, repr(seconds), value)]
            if remove and bad:
                self._remove(bad)
                self._db.commit()
        return len(rows), len(bad)

    def cached_map(
        self, identity: dict[str, Any], items: Sequence[Any], compute: Callable[[list], list], chunk: int | None = None
    ) -> list:
        """``compute(items)`` through the cache: only the misses are computed, in one call, or in calls of
        ``chunk`` items each stored as soon as it is done (an interrupted run keeps what it computed).
        The seconds the hits took when computed go to the :func:`saved_compute` meter."""
        keys = [call_key(identity, item) for item in items]
        hits = self.get_many(keys)
        meter = _SAVED.get()
        if meter is not None:
            meter.seconds += sum(seconds for _, seconds in hits.values())
        found = {key: value for key, (value, _) in hits.items()}
        missing = [i for i, key in enumerate(keys) if key not in found]
        step = chunk if chunk and self.enabled else max(1, len(missing))
        for start in range(0, len(missing), step):
            part = missing[start : start + step]
            started = time.perf_counter()
            computed = compute([items[i] for i in part])
            fresh = {keys[i]: value for i, value in zip(part, computed)}
            self.put_many(fresh, (time.perf_counter() - started) / max(len(part), 1))
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
        identity = {"backend": type(self.llm).__name__, "model": self.llm.model, "n_ctx": self.llm.n_ctx, "kind": kind}
        if getattr(self.llm, "flash_attn", False):  # llama.cpp's fused attention: other last digits, other keys
            identity["flash_attn"] = True
        return {**identity, **params}

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
