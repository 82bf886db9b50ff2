"""Dynamic micro-batching: concurrent requests become one batched runner call.

A :class:`MicroBatcher` owns a queue. Its loop takes the first waiting request, keeps collecting until
``max_batch`` requests are in hand or ``max_wait_ms`` have passed since the first one arrived, and hands
the batch to ``process`` in the worker thread. While a batch runs, new requests queue up, so under load
the next batch forms at once (the wait only matters when the service is idle). Requests whose caller gave
up (timed out or disconnected) before their batch started are dropped from it.

When ``process`` fails on a batch of several requests, each request is run again alone
(:func:`run_isolated`, which the Ray Serve replicas of :mod:`hopstack.serve.ray_serve` use too), so one
bad question fails only its own request.
"""

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

BatchObserver = Callable[[int, float], None]
Outcome = tuple[Any, BaseException | None]


class ServiceUnavailable(RuntimeError):
    """The service cannot take the request now (a 503): it is shutting down, or what runs its batches is gone."""


class ServiceClosing(ServiceUnavailable):
    """The batcher is draining for shutdown and takes no new requests."""


def run_isolated(process: Callable[[list[Any]], Sequence[Any]], items: list[Any]) -> list[Outcome]:
    """``process(items)`` as one ``(result, None)`` per item; when it fails on several items, each item is run
    again alone, so a failing item gets ``(None, its error)`` and the others their results."""
    try:
        return [(value, None) for value in process(items)]
    except Exception as exc:
        if len(items) == 1:
            return [(None, exc)]
    outcomes: list[Outcome] = []
    for item in items:
        try:
            outcomes.append((process([item])[0], None))
        except Exception as exc:
            outcomes.append((None, exc))
    return outcomes


@dataclass
class _Request:
    item: Any
    future: asyncio.Future
    arrived: float = field(default_factory=time.perf_counter)


@dataclass
class BatchedResult:
    """What :meth:`MicroBatcher.submit` returns: ``process``'s result for the item, the size of the batch it
    ran in and the seconds it waited in the queue before its batch started."""

    value: Any
    batch_size: int
    queued_s: float


class MicroBatcher:
    """Groups concurrent items into calls of ``process(items) -> results`` (one result per item, in order).

    :param process: the batch function; it runs in ``executor`` (one worker thread: models are not
        thread-safe).
    :param max_batch: the most items one call receives (1: no batching, each item is its own call).
    :param max_wait_ms: how long the first item of a batch waits for company.
    :param on_batch: called with (batch size, seconds) after every call, for metrics.
    """

    def __init__(
        self,
        process: Callable[[list[Any]], Sequence[Any]],
        executor: Executor,
        max_batch: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: BatchObserver | None = None,
    ):
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be at least 0, got {max_wait_ms}")
        self.process = process
        self.executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Request | None] | None = None
        self._task: asyncio.Task | None = None
        self._closing = False

    @property
    def queued(self) -> int:
        """Requests waiting for a batch."""
        return self._queue.qsize() if self._queue is not None else 0

    def start(self) -> None:
        """Start the batching loop on the running event loop."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def submit(self, item: Any, timeout_s: float | None = None) -> BatchedResult:
        """Queue ``item`` and wait for its result; raises :class:`TimeoutError` after ``timeout_s`` (the item
        is dropped if its batch has not started), :class:`ServiceClosing` once :meth:`close` was called, or
        whatever ``process`` raised for this item."""
        if self._closing or self._queue is None:
            raise ServiceClosing("the service is shutting down")
        request = _Request(item, asyncio.get_running_loop().create_future())
        await self._queue.put(request)
        try:
            return await asyncio.wait_for(asyncio.shield(request.future), timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            request.future.cancel()
            raise

    async def close(self) -> None:
        """Take no new requests, finish every queued and running batch, then stop the loop."""
        self._closing = True
        if self._task is not None and self._queue is not None:
            await self._queue.put(None)
            await self._task
            self._task = None

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = first.arrived + self.max_wait_s
            while len(batch) < self.max_batch:
                left = deadline - time.perf_counter()
                try:
                    request = self._queue.get_nowait() if left <= 0 else await asyncio.wait_for(self._queue.get(), left)
                except (asyncio.QueueEmpty, TimeoutError):
                    break
                if request is None:
                    stopping = True
                    break
                batch.append(request)
            batch = [r for r in batch if not r.future.done()]
            if batch:
                await self._run(loop, batch)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Request]) -> None:
        started = time.perf_counter()
        outcomes = await loop.run_in_executor(self.executor, run_isolated, self.process, [r.item for r in batch])
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - started)
        for request, (value, error) in zip(batch, outcomes):
            if request.future.done():
                continue
            if error is not None:
                request.future.set_exception(error)
            else:
                request.future.set_result(BatchedResult(value, len(batch), started - request.arrived))
