"""Test helpers for component authors and for tests of the service.

``assert_run_batch_matches_run`` holds a component's ``run_batch`` against its ``run`` on any inputs:
use it in the tests of every component that defines ``run_batch``. ``free_port``, ``wait_ready`` and
``stop_process`` start and stop the servers of tests and benchmarks (``hopstack serve``, Hayhooks);
``LocalRayCluster`` a Ray cluster of several nodes on 127.0.0.1 (tests/test_ray.py, benchmarks/ray_scaling.py).
``odd_value``, ``replace_somewhere``, ``mutate_data`` and ``mutate_text`` make the mutants of the fuzz
tests (tests/test_fuzz.py) and of benchmarks/fuzz.py from shipped files and odd values.
"""

import copy
import dataclasses
import math
import random
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


class LocalRayCluster:
    """A Ray cluster of ``nodes`` nodes on 127.0.0.1, each a separate ``ray start --block`` process (the head with
    Ray's dashboard, which the state API needs) with ``cpus_per_node`` CPUs; :meth:`stop` stops each by its PID.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`; ``address`` is the head's
    ``127.0.0.1:PORT``, ``processes`` the node processes (the head's first), ``logs`` the folder of their output."""

    def __init__(self, nodes: int = 2, cpus_per_node: int = 1, logs: str | None = None, object_store_mb: int = 100):
        import tempfile

        self.nodes = nodes
        self.cpus_per_node = cpus_per_node
        self.object_store_mb = object_store_mb
        self.logs = logs or tempfile.mkdtemp(prefix="hopstack-ray-")
        self.address = ""
        self.processes: list[subprocess.Popen] = []

    def _start_node(self, number: int, *options: str) -> None:
        import os
        import sys
        from pathlib import Path

        ray = str(Path(sys.executable).with_name("ray"))
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        common = [
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={self.cpus_per_node}",
            "--num-gpus=0",
            f"--object-store-memory={self.object_store_mb * 1_000_000}",
            "--disable-usage-stats",
            "--block",
        ]
        with open(Path(self.logs) / f"node-{number}.log", "wb") as log:
            process = subprocess.Popen([ray, "start", *options, *common], stdout=log, stderr=subprocess.STDOUT, env=env)
        self.processes.append(process)

    def start(self, timeout_s: float = 120.0) -> "LocalRayCluster":
        """Start the head, then the other nodes, and wait until every node is alive (or raise TimeoutError); this
        process is not left connected."""
        from hopstack.core.ray_cluster import import_ray

        ray = import_ray()
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        self._start_node(0, "--head", f"--port={port}", f"--dashboard-port={free_port()}", "--include-dashboard=true")
        self._wait(lambda: _listening(port), timeout_s, "the head node")
        for number in range(1, self.nodes):
            self._start_node(number, f"--address={self.address}")

        def all_alive() -> bool:
            if not ray.is_initialized():
                ray.init(address=self.address, logging_level="ERROR", log_to_driver=False)
            return sum(1 for node in ray.nodes() if node["Alive"]) == self.nodes

        self._wait(all_alive, timeout_s, f"{self.nodes} nodes")
        ray.shutdown()  # hopstack's own connect() joins it, with the options it sets
        return self

    def _wait(self, ready: Callable[[], bool], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            failed = [p.pid for p in self.processes if p.poll() is not None]
            if failed or time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"{what} of the Ray cluster did not start (see {self.logs}; exited: {failed})")
            time.sleep(0.5)

    def stop(self) -> None:
        """Disconnect this process and stop every node process by its PID (the workers first)."""
        import ray

        if ray.is_initialized():
            ray.shutdown()
        for process in reversed(self.processes):
            stop_process(process, 30)
        self.processes = []

    def __enter__(self) -> "LocalRayCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


# -- mutants for fuzzing -----------------------------------------------------------------------------------

ODD_SCALARS: tuple[Any, ...] = (
    None, True, False, 0, -1, -(2**63), 2**64, 10**400, 1.5, -0.0, 1e308,
    float("nan"), float("inf"), float("-inf"),
    "", " ", "0", "-1", "1.5", "1e999", "NaN", "null", "yes", "~", "x" * 5000, "\u00e9\u6f22\U0001f642",
    "\u202etxt.exe", "\x00", "\ud800", "a\nb", "\t", "../../../etc/passwd", "/dev/zero", "${HOME}", "{{ 7 * 7 }}",
    "%s%n", "os.system", "hopstack.__main__.main", "builtins.eval",
)  # fmt: skip
"""Values a file's author would not write: NaN and infinities, negative and huge numbers, empty, long,
control and non-BMP text, a lone surrogate, paths, templates and the names of dangerous callables."""

YAML_SNIPPETS: tuple[str, ...] = (
    "a: &a [1, 2]\nb: *a\n",
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b]\n",
    "<<: {top_k: 3}\n",
    "? [1, 2]\n: value\n",
    "? {a: 1}\n: value\n",
    "key: !!binary aGVsbG8=\n",
    "key: !!set {a, b}\n",
    "key: !!omap [a: 1, b: 2]\n",
    "key: !!timestamp 2001-12-14t21:59:43.10-05:00\n",
    "key: !!float .nan\n",
    "key: !custom tag\n",
    "key: |\n  block\n   text\n",
    "%YAML 1.1\n---\n",
    "---\n...\n---\n",
    "key: " + "[" * 70 + "]" * 70 + "\n",
    'key: "\\ud800"\n',
    "\tkey: tab\n",
    "key: value\nkey: again\n",
)
"""YAML constructs that pipeline files do not use: aliases (one of them a small expansion bomb), merge keys,
complex keys, tags, directives, several documents, deep flow nesting, escapes, tabs, duplicate keys."""


def odd_value(rng: random.Random, depth: int = 0) -> Any:
    """A value for a mutant: one of :data:`ODD_SCALARS`, a random number or text, a deeply nested list, or a
    short list or mapping of odd values."""
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(ODD_SCALARS)
    if roll < 0.6:
        return rng.choice([rng.randint(-(2**70), 2**70), rng.uniform(-1e6, 1e6), rng.random()])
    if roll < 0.72:
        alphabet = "ab zAZ09_.:-/\\'\"{}[]#&*!|>%@`\u00e9\u00df\u4e2d\u0430\U0001f600\u200b\n\t"
        return "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40)))
    if roll < 0.8:
        value: Any = rng.choice([0, "x", None])
        for _ in range(rng.randint(2, 120)):
            value = [value] if rng.random() < 0.5 else {"k": value}
        return value
    if depth >= 2 or roll < 0.9:
        return [odd_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {str(odd_value(rng, depth + 1))[:20]: odd_value(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def replace_somewhere(data: Any, rng: random.Random, value: Any) -> Any:
    """``data`` with one randomly chosen place (a value, a key's value, a list item) replaced by ``value``."""
    if isinstance(data, dict) and data and rng.random() < 0.8:
        key = rng.choice(list(data))
        return {**data, key: replace_somewhere(data[key], rng, value)}
    if isinstance(data, list) and data and rng.random() < 0.8:
        i = rng.randrange(len(data))
        return [*data[:i], replace_somewhere(data[i], rng, value), *data[i + 1 :]]
    return value


def _containers(data: Any) -> list[Any]:
    """Every mapping and list inside ``data``, ``data`` first."""
    found, stack = [], [data]
    while stack:
        item = stack.pop()
        if isinstance(item, (dict, list)):
            found.append(item)
            stack.extend(item.values() if isinstance(item, dict) else item)
    return found


def _retyped(value: Any, rng: random.Random) -> Any:
    """``value`` changed in type or size: a number as text, text as its length or in a list, a list as a
    mapping or its first item, a mapping as its values or keys."""
    if isinstance(value, bool) or value is None:
        return rng.choice([str(value).lower(), int(bool(value)), [value]])
    if isinstance(value, (int, float)):  # as text, in a list, negated, scaled, or a number of the other kind
        return rng.choice([str(value), [value], -value, value * 1000, 0.5 if isinstance(value, int) else 1])
    if isinstance(value, str):
        return rng.choice([len(value), [value], {value: value}, value.upper(), value[: len(value) // 2]])
    if isinstance(value, list):
        return rng.choice([{str(i): item for i, item in enumerate(value)}, value[0] if value else None, str(value)])
    return rng.choice([list(value.values()), list(value), str(value)[:200]])


def mutate_data(data: Any, rng: random.Random, changes: int = 1) -> Any:
    """A copy of ``data`` (a parsed YAML or JSON document) with ``changes`` random changes, each in a random
    mapping or list inside it: a key deleted, renamed or duplicated, two values swapped, a value replaced
    by :func:`odd_value` or turned into another type, a list item removed or repeated, a list emptied."""
    data = copy.deepcopy(data)
    for _ in range(changes):
        containers = _containers(data)
        if not containers:
            return odd_value(rng)
        target = rng.choice(containers)
        if isinstance(target, dict) and target:
            key = rng.choice(list(target))
            operation = rng.randrange(6)
            if operation == 0:
                del target[key]
            elif operation == 1:
                renamed = rng.choice([f"{key}_", str(key)[:-1], str(key).upper(), "", 5, None, f"{key}.{key}"])
                target[renamed] = target.pop(key)
            elif operation == 2:
                target[f"{key}2"] = copy.deepcopy(target[key])
            elif operation == 3 and len(target) > 1:
                other = rng.choice([k for k in target if k != key])
                target[key], target[other] = target[other], target[key]
            elif operation == 4:
                target[key] = _retyped(target[key], rng)
            else:
                target[key] = odd_value(rng)
        elif isinstance(target, list) and target:
            i = rng.randrange(len(target))
            operation = rng.randrange(5)
            if operation == 0:
                del target[i]
            elif operation == 1:
                target.insert(i, copy.deepcopy(target[i]))
            elif operation == 2:
                target[i] = _retyped(target[i], rng)
            elif operation == 3:
                target.clear()
            else:
                target[i] = odd_value(rng)
        elif isinstance(target, dict):
            target[str(odd_value(rng))[:20]] = odd_value(rng)
        else:
            target.append(odd_value(rng))
    return data


def mutate_text(text: str, rng: random.Random, snippets: Sequence[str] = ()) -> str:
    """``text`` with one random textual change: a line deleted, repeated, swapped with another or indented
    differently, a cut at a random character, random characters or a ``snippets`` entry inserted, a word
    replaced by an odd scalar, a byte-order mark, NUL or carriage return added, a line repeated many times."""
    lines = text.splitlines(keepends=True) or [""]
    i = rng.randrange(len(lines))
    operation = rng.randrange(11 if snippets else 10)
    if operation == 0:
        del lines[i]
    elif operation == 1:
        lines.insert(i, lines[i])
    elif operation == 2:
        j = rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    elif operation == 3:
        lines[i] = rng.choice([" ", "  ", "\t", ""]) + (
            lines[i][rng.randint(0, 2) :] if rng.random() < 0.5 else lines[i]
        )
    elif operation == 4:
        return text[: rng.randrange(len(text) + 1)]
    elif operation == 5:
        at = rng.randrange(len(text) + 1)
        noise = "".join(
            rng.choice(":-[]{}#&*!|>'\"%@`,?\\\x00\r\n\t \u00e9\ufeff\ud800") for _ in range(rng.randint(1, 8))
        )
        return text[:at] + noise + text[at:]
    elif operation == 6:
        words = lines[i].split(" ")
        k = rng.randrange(len(words))
        words[k] = str(rng.choice(ODD_SCALARS))[:200] + ("\n" if words[k].endswith("\n") else "")
        lines[i] = " ".join(words)
    elif operation == 7:
        return rng.choice(["\ufeff", "\x00", "\r\n", "\r"]).join([text[: len(text) // 2], text[len(text) // 2 :]])
    elif operation == 8:
        lines[i] = lines[i] * rng.choice([2, 50, 5000])
    elif operation == 9:
        lines[i] = lines[i].replace(":", rng.choice([" :", "::", ": :", ""]), 1)
    else:
        lines.insert(i, rng.choice(snippets))
    return "".join(lines)
