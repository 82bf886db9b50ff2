"""The batched runner spread over Ray actors (``--ray`` on ``hopstack eval`` and ``compare``;
docs/concepts/scale-out.md).

:class:`RayRunner` takes the place of :class:`~hopstack.graphs.runner.BatchRunner`: the items are cut into
shards, and each shard runs on one of a pool of Ray actors, each holding its own ``BatchRunner`` over the
same pipeline (rebuilt from the pipeline's dict, so its models load once per actor). The driver joins the
shards' outputs in the items' order and sums their node statistics; metrics and tests then run on the driver
as before. A node cache is shared through its file (SQLite in WAL mode, safe for several processes): each
actor opens the same path, which must be on a filesystem every node sees.

Faults: an actor whose process dies is restarted by Ray (up to ``MAX_RESTARTS`` times) and the shard it held
is run again (``max_task_retries``); components give the same outputs for the same inputs, so the run's
results do not change. A component's own error comes back as the error the single-process run raises.
"""

import math
import os
import time
from collections.abc import Collection, Sequence
from typing import Any

from haystack import Pipeline

from hopstack.core.ray_cluster import RaySettings, connect
from hopstack.errors import PipelineRunError
from hopstack.graphs.node_cache import NodeCache
from hopstack.graphs.runner import BatchRunner, NodeStats, Progress, RunResult

MAX_RESTARTS = 3
SHARDS_PER_ACTOR = 4  # smaller shards balance the actors' loads and make a retried shard cheaper


class ShardWorker:
    """The Ray actor behind :class:`RayRunner`: one ``BatchRunner`` over the pipeline, run shard by shard."""

    def __init__(self, pipeline: dict[str, Any], batch_size: int, cache: dict[str, Any] | None, cwd: str):
        if os.path.isdir(cwd):
            os.chdir(cwd)  # relative index and cache paths mean what they mean to the driver
        node_cache = NodeCache(cache["path"], enabled=True, limit_bytes=cache["limit_bytes"]) if cache else None
        self.runner = BatchRunner(Pipeline.from_dict(pipeline, allowed_modules=["hopstack"]), batch_size, node_cache)

    def fingerprints(self) -> dict[str, str]:
        """The rebuilt pipeline's node fingerprints (the driver checks they are its own)."""
        return self.runner.fingerprints

    def warm_up(self) -> None:
        """Load every component's models once."""
        self.runner.warm_up()

    def run(self, inputs: list[dict[str, Any]], kwargs: dict[str, Any]) -> RunResult:
        """One shard through ``BatchRunner.run``."""
        return self.runner.run(inputs, **kwargs)


def _as_hopstack_error(exc: Exception) -> Exception:
    """What a Ray failure means here: a component's own error as itself (a ``PipelineRunError`` naming the node
    and items, say), an actor that kept dying as a ``PipelineRunError``; anything else unchanged."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(exc, RayTaskError):
        return exc.cause if isinstance(exc.cause, Exception) else PipelineRunError(f"a Ray task failed: {exc}")
    if isinstance(exc, RayActorError):
        return PipelineRunError(f"a Ray actor died {MAX_RESTARTS + 1} times; giving up: {exc}")
    return exc


def merge_stats(shards: Sequence[dict[str, NodeStats]]) -> dict[str, NodeStats]:
    """Node statistics of several shard runs added up (calls, items, seconds; batch sizes joined)."""
    merged: dict[str, NodeStats] = {}
    for stats in shards:
        for name, part in stats.items():
            total = merged.setdefault(name, NodeStats(name, part.type, batched=part.batched))
            total.calls += part.calls
            total.items += part.items
            total.wall_s += part.wall_s
            total.batch_sizes.extend(part.batch_sizes)
            total.cached += part.cached
            total.cached_compute_s += part.cached_compute_s
            total.call_cached_s += part.call_cached_s
            total.warm_up_s += part.warm_up_s
            total.cache_s += part.cache_s
    return merged


class RayRunner:
    """A :class:`~hopstack.graphs.runner.BatchRunner` whose :meth:`run` is spread over Ray actors.

    :param pipeline: the loaded pipeline; the actors rebuild it from ``pipeline.to_dict()``.
    :param settings: the cluster, the actors' number and resources, and the items a shard holds
        (:class:`RaySettings`; by default the items are spread over ``SHARDS_PER_ACTOR`` shards an actor).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        batch_size: int | None = None,
        node_cache: NodeCache | None = None,
        settings: RaySettings | None = None,
    ):
        self.local = BatchRunner(pipeline, batch_size, node_cache)  # plans inputs; never warmed up here
        self.pipeline = pipeline
        self.fingerprints = self.local.fingerprints
        self.settings = settings or RaySettings()
        self._actors: list[Any] = []

    def question_input(self, question: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """As :meth:`BatchRunner.question_input`."""
        return self.local.question_input(question, extra)

    def _start(self) -> list[Any]:
        if self._actors:
            return self._actors
        ray = connect(self.settings.address)
        cache = self.local.node_cache
        worker = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=MAX_RESTARTS)(ShardWorker)
        options = {**self.settings.actor_options(), "scheduling_strategy": "SPREAD"}
        spec = self.pipeline.to_dict()
        cache_spec = {"path": str(cache.path.resolve()), "limit_bytes": cache.limit_bytes} if cache else None
        self._actors = [
            worker.options(**options).remote(spec, self.local.batch_size, cache_spec, os.getcwd())
            for _ in range(self.settings.actor_count())
        ]
        for fingerprints in self._get([actor.fingerprints.remote() for actor in self._actors]):
            if fingerprints != self.fingerprints:
                self.close()
                raise PipelineRunError("the pipeline rebuilt on a Ray actor differs from the driver's (fingerprints)")
        return self._actors

    @staticmethod
    def _get(refs: Any) -> Any:
        """``ray.get``, with errors as :func:`_as_hopstack_error` turns them."""
        import ray

        try:
            return ray.get(refs)
        except Exception as exc:
            raise _as_hopstack_error(exc) from exc

    def warm_up(self) -> None:
        """Start the actors and load every component's models on each."""
        self._get([actor.warm_up.remote() for actor in self._start()])

    def run(
        self,
        inputs: Sequence[dict[str, Any]],
        trace: bool = False,
        item_ids: Sequence[str] | None = None,
        include_outputs_from: Collection[str] = (),
        progress: Progress | None = None,
        stats_only: bool = False,
        targets: Collection[str] | None = None,
    ) -> RunResult:
        """As :meth:`BatchRunner.run`, the shards on the actors; ``progress`` hears of shards done (its name says
        how many actors). A ``stats_only`` run reads the node cache on the driver and starts no actor."""
        if stats_only:
            return self.local.run(inputs, trace, item_ids, include_outputs_from, progress, True, targets)
        from ray.util import ActorPool

        started = time.perf_counter()
        actors = self._start()
        n = len(inputs)
        size = self.settings.shard_size or max(1, math.ceil(n / (SHARDS_PER_ACTOR * len(actors))))
        shards = [range(start, min(start + size, n)) for start in range(0, n, size)]
        label = f"shards on {len(actors)} Ray actor(s)"
        report = progress or (lambda node, done, total: None)
        report(label, 0, len(shards))

        options = {"trace": trace, "include_outputs_from": set(include_outputs_from), "targets": targets}

        def submit(actor: Any, shard: range) -> Any:
            ids = [item_ids[i] for i in shard] if item_ids is not None else [str(i) for i in shard]
            return actor.run.remote([inputs[i] for i in shard], {**options, "item_ids": ids})

        parts: list[RunResult] = []
        pool = ActorPool(actors)
        try:
            for part in pool.map(submit, shards):
                parts.append(part)
                report(label, len(parts), len(shards))
        except Exception as exc:
            raise _as_hopstack_error(exc) from exc
        outputs = [item for part in parts for item in part.outputs]
        traces = [item for part in parts for item in part.traces or []] if trace else None
        return RunResult(
            outputs, merge_stats([p.stats for p in parts]), self.fingerprints, time.perf_counter() - started, traces
        )

    def close(self) -> None:
        """Stop the actors (their models are released); the runner starts new ones when it runs again."""
        if self._actors:
            import ray

            for actor in self._actors:
                ray.kill(actor)
            self._actors = []


def make_runner(
    pipeline: Pipeline,
    batch_size: int | None = None,
    node_cache: NodeCache | None = None,
    ray: RaySettings | None = None,
) -> BatchRunner | RayRunner:
    """The runner for a pipeline: a :class:`RayRunner` when ``ray`` settings are given, else a ``BatchRunner``."""
    if ray is None:
        return BatchRunner(pipeline, batch_size, node_cache)
    return RayRunner(pipeline, batch_size, node_cache, ray)
