"""Test helpers for component authors and for tests of the service.

``assert_run_batch_matches_run`` holds a component's ``run_batch`` against its ``run`` on any inputs:
use it in the tests of every component that defines ``run_batch``. ``free_port``, ``wait_ready`` and
``stop_process`` start and stop the servers of tests and benchmarks (``hopstack serve``, Hayhooks).
"""

import dataclasses
import math
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from haystack import Document


def _close(a: Any, b: Any, rel: float, path: str) -> None:
    if isinstance(a, Document) and isinstance(b, Document):
        assert a.id == b.id, f"{path}: document id {a.id!r} != {b.id!r}"
        assert a.content == b.content, f"{path}: content differs for document {a.id!r}"
        _close(a.meta, b.meta, rel, f"{path}.meta")  # stage scores kept in meta are floats too
        _close(a.score, b.score, rel, f"{path}.score")
    elif dataclasses.is_dataclass(a) and not isinstance(a, type) and type(a) is type(b):  # e.g. GeneratedAnswer
        fields = [f.name for f in dataclasses.fields(a)]
        _close({f: getattr(a, f) for f in fields}, {f: getattr(b, f) for f in fields}, rel, path)
    elif isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None, f"{path}: {a!r} != {b!r}"
        assert math.isclose(a, b, rel_tol=rel, abs_tol=rel), f"{path}: {a!r} != {b!r}"
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            _close(a[key], b[key], rel, f"{path}.{key}")
    elif isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, rel, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def assert_outputs_equal(a: Any, b: Any, rel: float = 1e-5, path: str = "outputs") -> None:
    """Assert two component or pipeline outputs are equal; floats (document scores, floats in document meta,
    also inside dataclasses such as ``GeneratedAnswer``) within ``rel``."""
    _close(a, b, rel, path)


def assert_run_batch_matches_run(
    component: Any,
    inputs: Sequence[dict[str, Any]],
    rel: float = 1e-5,
    compare: Callable[[Any, Any, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Check that ``component.run_batch`` gives, item by item, what ``component.run`` gives.

    ``inputs`` is a list of keyword dicts for ``run``; every dict must name the same inputs. The
    component is warmed up first if it has ``warm_up``. Returns the per-item outputs of ``run``.
    """
    if hasattr(component, "warm_up"):
        component.warm_up()
    names = set(inputs[0]) if inputs else set()
    for i, item in enumerate(inputs):
        assert set(item) == names, f"inputs[{i}] names {sorted(item)}, inputs[0] names {sorted(names)}"
    single = [component.run(**item) for item in inputs]
    batched = component.run_batch(**{name: [item[name] for item in inputs] for name in names})
    output_names = set(single[0]) if single else set(batched)
    assert set(batched) == output_names, f"run_batch outputs {sorted(batched)} != run outputs {sorted(output_names)}"
    check = compare or (lambda x, y, where: assert_outputs_equal(x, y, rel, where))
    for name in output_names:
        assert len(batched[name]) == len(inputs), (
            f"run_batch output {name!r} has {len(batched[name])} items for a batch of {len(inputs)}"
        )
        for i, item_outputs in enumerate(single):
            check(batched[name][i], item_outputs[name], f"item {i}, output {name!r}")
    return single


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(client: Any, seconds: float = 300.0) -> None:
    """Poll ``client.get("/readyz")`` (a FastAPI TestClient, or an ``httpx.Client`` with a ``base_url``) until
    the service is ready; raises RuntimeError when a pipeline failed to warm up, TimeoutError after
    ``seconds``. A server that does not listen yet counts as not ready."""
    import httpx

    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        try:
            response = client.get("/readyz")
        except httpx.TransportError as exc:
            last = exc
        else:
            if response.status_code == 200:
                return
            last = response.json()
            if last.get("error"):
                raise RuntimeError(last["error"])
        time.sleep(0.1)
    raise TimeoutError(f"the service was not ready within {seconds:g} s: {last}")


def stop_process(process: subprocess.Popen, timeout_s: float) -> int:
    """Stop a server gracefully (SIGTERM), kill it if it has not exited after ``timeout_s``; its exit status."""
    process.terminate()
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
