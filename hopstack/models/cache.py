"""An on-disk cache of model calls (docs/concepts/caching.md): a repeated evaluation makes no model calls.

Entries live in one SQLite file (``$HOPSTACK_HOME/cache/calls.sqlite`` by default), keyed by the
sha256 of the model's identity, the call's kind and parameters, and the one input; values are JSON.
``HOPSTACK_CACHE=off`` (or ``enabled=False``) turns it off. Safe to use from several threads.
"""

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hopstack.core.settings import cache_enabled, cache_home
from hopstack.core.spec import NestedComponents
from hopstack.models.llm import Prompt


def call_key(identity: dict[str, Any], item: Any) -> str:
    """The cache key of one input under one model and parameter set."""
    payload = json.dumps({"identity": identity, "item": item}, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CallCache:
    """A key-value store of JSON results in SQLite; ``enabled=None`` follows ``$HOPSTACK_CACHE``, True or
    False forces it on or off. Components get theirs from :func:`call_cache`."""

    def __init__(self, path: str | Path | None = None, enabled: bool | None = None):
        self.enabled = cache_enabled() if enabled is None else enabled
        self.path = Path(path) if path else cache_home() / "calls.sqlite"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        return self._db

    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """The cached values of those ``keys`` that are present."""
        if not self.enabled or not keys:
            return {}
        found: dict[str, Any] = {}
        with self._lock:
            db = self._connection()
            for start in range(0, len(keys), 500):
                chunk = list(keys[start : start + 500])
                marks = ",".join("?" * len(chunk))
                for key, value in db.execute(f"SELECT key, value FROM calls WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(value)
        return found

    def put_many(self, items: dict[str, Any]) -> None:
        """Store results under their keys."""
        if not self.enabled or not items:
            return
        with self._lock:
            db = self._connection()
            db.executemany("INSERT OR REPLACE INTO calls VALUES (?, ?)", [(k, json.dumps(v)) for k, v in items.items()])
            db.commit()

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
