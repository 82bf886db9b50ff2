"""MicroBatcher: grouping, isolation of failures, timeouts and draining on shutdown."""

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from hopstack.serve.batching import MicroBatcher, ServiceClosing


class Recorder:
    """A batch function that doubles numbers, records every batch, fails on "bad" and can be slowed."""

    def __init__(self, delay_s: float = 0.0):
        self.batches: list[list] = []
        self.delay_s = delay_s

    def __call__(self, items: list) -> list:
        self.batches.append(list(items))
        time.sleep(self.delay_s)
        if "bad" in items:
            raise ValueError("bad item")
        return [item * 2 for item in items]


def run(coroutine_factory, process, **settings):
    """Run ``coroutine_factory(batcher)`` against a started batcher on a fresh event loop."""

    async def main():
        with ThreadPoolExecutor(max_workers=1) as executor:
            batcher = MicroBatcher(process, executor, **settings)
            batcher.start()
            try:
                return await coroutine_factory(batcher)
            finally:
                await batcher.close()

    return asyncio.run(main())


def test_concurrent_requests_form_batches_of_at_most_max_batch():
    process = Recorder()

    async def scenario(batcher):
        return await asyncio.gather(*(batcher.submit(i) for i in range(10)))

    results = run(scenario, process, max_batch=4, max_wait_ms=100)
    assert [r.value for r in results] == [i * 2 for i in range(10)]
    assert [len(b) for b in process.batches] == [4, 4, 2]
    assert [r.batch_size for r in results] == [4] * 8 + [2] * 2


def test_max_batch_one_runs_every_request_alone():
    process = Recorder()

    async def scenario(batcher):
        return await asyncio.gather(*(batcher.submit(i) for i in range(5)))

    results = run(scenario, process, max_batch=1, max_wait_ms=100)
    assert [len(b) for b in process.batches] == [1] * 5
    assert {r.batch_size for r in results} == {1}


def test_a_failing_item_fails_only_its_own_request():
    process = Recorder()

    async def scenario(batcher):
        return await asyncio.gather(*(batcher.submit(x) for x in (1, "bad", 3)), return_exceptions=True)

    ok1, failed, ok3 = run(scenario, process, max_batch=8, max_wait_ms=50)
    assert ok1.value == 2 and ok3.value == 6
    assert isinstance(failed, ValueError)
    assert process.batches[0] == [1, "bad", 3] and [1] in process.batches and [3] in process.batches


def test_a_request_that_times_out_before_its_batch_is_dropped():
    process = Recorder(delay_s=0.3)

    async def scenario(batcher):
        first = asyncio.create_task(batcher.submit(1))
        await asyncio.sleep(0.05)  # the first batch is running now
        with pytest.raises(TimeoutError):
            await batcher.submit(2, timeout_s=0.05)
        third = await batcher.submit(3)
        return (await first).value, third.value

    assert run(scenario, process, max_batch=8, max_wait_ms=0) == (2, 6)
    assert [2] not in process.batches and 2 not in [x for b in process.batches for x in b]


def test_close_finishes_queued_requests_and_refuses_new_ones():
    process = Recorder()
    closed = threading.Event()

    async def scenario(batcher):
        waiting = [asyncio.create_task(batcher.submit(i)) for i in range(3)]
        await asyncio.sleep(0.01)  # queued; the batch waits up to 500 ms for company
        await batcher.close()
        closed.set()
        with pytest.raises(ServiceClosing):
            await batcher.submit(9)
        return [(await w).value for w in waiting]

    assert run(scenario, process, max_batch=8, max_wait_ms=500) == [0, 2, 4]
    assert closed.is_set() and process.batches == [[0, 1, 2]]


def test_settings_are_checked():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(Recorder(), ThreadPoolExecutor(1), max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(Recorder(), ThreadPoolExecutor(1), max_wait_ms=-1)
