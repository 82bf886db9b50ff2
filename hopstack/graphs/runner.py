"""The batched graph runner (DESIGN decision 2).

:class:`BatchRunner` executes a loaded ``haystack.Pipeline`` over a list of inputs node by node in
topological order. For each node it gathers every item's inputs (pipeline inputs, upstream outputs
with Haystack's type conversions, defaults of optional sockets, variadic sockets joined as Haystack
joins them), then calls the component's ``run_batch`` once per chunk of at most ``batch_size`` items,
or maps ``run`` over the items when the component has no ``run_batch``. An item whose mandatory input
never arrived (a branch that did not fire) skips the node, as under ``Pipeline.run``.

Per item it returns what ``Pipeline.run`` returns for that item (the outputs that no other component
consumes), optionally a trace of every node's outputs, and per node the wall time, call count and
batch sizes. Node fingerprints are exposed for caching.
"""

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from haystack import Pipeline
from haystack.core.type_utils import _convert_value

from hopstack.errors import HopstackInputError, PipelineRunError
from hopstack.graphs.fingerprint import pipeline_fingerprints
from hopstack.pipelines.validate import pipeline_inputs

DEFAULT_BATCH_SIZE = 256

_MISSING = object()


@dataclass
class NodeStats:
    """What one node cost during a run."""

    name: str
    type: str
    calls: int = 0
    items: int = 0
    wall_s: float = 0.0
    batch_sizes: list[int] = field(default_factory=list)
    batched: bool = False

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary."""
        return {
            "type": self.type,
            "batched": self.batched,
            "calls": self.calls,
            "items": self.items,
            "wall_s": self.wall_s,
            "max_batch": max(self.batch_sizes, default=0),
        }


@dataclass
class RunResult:
    """The result of one :meth:`BatchRunner.run`.

    ``outputs[i]`` is what ``Pipeline.run`` returns for item ``i``; ``traces[i]`` (when asked for) maps
    every node that ran for item ``i`` to its full outputs.
    """

    outputs: list[dict[str, dict[str, Any]]]
    stats: dict[str, NodeStats]
    fingerprints: dict[str, str]
    wall_s: float
    traces: list[dict[str, dict[str, Any]]] | None = None


@dataclass
class _Incoming:
    sender: str
    sender_socket: str
    conversion: Any


@dataclass
class _Node:
    name: str
    instance: Any
    sockets: dict[str, Any]
    incoming: dict[str, list[_Incoming]]
    leaf_outputs: list[str]
    run_batch: Callable[..., dict[str, list[Any]]] | None


class BatchRunner:
    """Run a Haystack pipeline over many inputs at once.

    :param pipeline: a loaded ``haystack.Pipeline`` (see :func:`hopstack.pipelines.loading.load_pipeline`).
    :param batch_size: the most items one ``run_batch`` call receives; larger batches are cut into
        chunks. Defaults to ``metadata.hopstack.batch_size`` or 256.
    """

    def __init__(self, pipeline: Pipeline, batch_size: int | None = None):
        settings = (pipeline.metadata or {}).get("hopstack") or {}
        self.pipeline = pipeline
        self.batch_size = int(batch_size or settings.get("batch_size") or DEFAULT_BATCH_SIZE)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")
        self.fingerprints = pipeline_fingerprints(pipeline)
        self._nodes = [self._plan(name) for name in nx.lexicographical_topological_sort(pipeline.graph)]
        self._input_sockets = pipeline.inputs()
        self.input_names = sorted({s for sockets in self._input_sockets.values() for s in sockets})
        self.question_sockets = [s for s in pipeline_inputs(pipeline.metadata) if s in self.input_names]
        self._warm = False

    def _plan(self, name: str) -> _Node:
        graph = self.pipeline.graph
        incoming: dict[str, list[_Incoming]] = {}
        for sender, _, edge in sorted(graph.in_edges(name, data=True), key=lambda e: e[0]):
            incoming.setdefault(edge["to_socket"].name, []).append(
                _Incoming(sender, edge["from_socket"].name, edge.get("conversion_strategy"))
            )
        outputs = graph.nodes[name]["output_sockets"]
        instance = graph.nodes[name]["instance"]
        run_batch = getattr(instance, "run_batch", None)
        return _Node(
            name=name,
            instance=instance,
            sockets=graph.nodes[name]["input_sockets"],
            incoming=incoming,
            leaf_outputs=[s for s, sock in outputs.items() if not sock.receivers],
            run_batch=run_batch if callable(run_batch) else None,
        )

    def warm_up(self) -> None:
        """Warm up every component (load models, build indexes) once."""
        if not self._warm:
            self.pipeline.warm_up()
            self._warm = True

    # -- inputs ------------------------------------------------------------------------------
    def question_input(self, question: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Flat inputs for one question: the text on every question socket (``metadata.hopstack.inputs``),
        plus those ``extra`` values whose keys name other pipeline inputs (``top_k``, say)."""
        if not self.question_sockets:
            raise HopstackInputError(
                f"no pipeline input takes the question: declared inputs {list(pipeline_inputs(self.pipeline.metadata))}, "
                f"unconnected sockets {self.input_names}"
            )
        data = {socket: question for socket in self.question_sockets}
        for key, value in (extra or {}).items():
            if key in self.input_names and key not in data:
                data[key] = value
        return data

    def distribute(self, data: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Map one item's inputs to ``{component: {socket: value}}`` as ``Pipeline.run`` does.

        ``data`` is either nested (``{"bm25": {"query": ...}}``) or flat (``{"query": ...}``, sent to every
        unconnected socket of that name). A flat key no socket takes is an error, not a silent drop.
        """
        if data and all(isinstance(v, dict) for v in data.values()) and set(data) <= set(self.pipeline.graph.nodes):
            return data
        nested: dict[str, dict[str, Any]] = {}
        for key, value in data.items():
            receivers = [name for name, sockets in self._input_sockets.items() if key in sockets]
            if not receivers:
                known = sorted({s for sockets in self._input_sockets.values() for s in sockets})
                raise HopstackInputError(f"input '{key}' feeds no component; pipeline inputs are {known}")
            for name in receivers:
                nested.setdefault(name, {})[key] = value
        return nested

    def _gather(self, node: _Node, item: int, given: dict[str, Any], results: dict[str, list]) -> dict | None:
        """One item's keyword arguments for ``node``, or None when a mandatory input is missing."""
        kwargs: dict[str, Any] = {}
        for socket_name, socket in node.sockets.items():
            values = []
            if socket_name in given:
                values.append(given[socket_name])
            for link in node.incoming.get(socket_name, ()):
                upstream = results[link.sender][item]
                if upstream is None:
                    continue
                value = upstream.get(link.sender_socket, _MISSING)
                if value is _MISSING:
                    continue
                values.append(_convert_value(value, link.conversion) if link.conversion else value)
            if not values:
                if socket.is_mandatory:
                    return None
                kwargs[socket_name] = socket.default_value
            elif socket.is_greedy:
                kwargs[socket_name] = [values[0]]
            elif socket.is_lazy_variadic:
                kwargs[socket_name] = values if socket.wrap_input_in_list else list(itertools.chain.from_iterable(values))
            else:
                kwargs[socket_name] = values[0]
        return kwargs

    # -- execution ---------------------------------------------------------------------------
    def _call(self, node: _Node, ready: list[int], kwargs: list[dict], stats: NodeStats) -> list[dict]:
        outputs: list[dict] = []
        if node.run_batch is None:
            for args in kwargs:
                outputs.append(node.instance.run(**args))
                stats.calls += 1
                stats.batch_sizes.append(1)
            return outputs
        names = list(node.sockets)
        for start in range(0, len(kwargs), self.batch_size):
            chunk = kwargs[start : start + self.batch_size]
            result = node.run_batch(**{n: [args[n] for args in chunk] for n in names})
            stats.calls += 1
            stats.batch_sizes.append(len(chunk))
            if not isinstance(result, dict) or any(
                not isinstance(v, list) or len(v) != len(chunk) for v in result.values()
            ):
                shape = {k: len(v) if isinstance(v, list) else type(v).__name__ for k, v in dict(result or {}).items()}
                raise PipelineRunError(
                    f"component '{node.name}' ({type(node.instance).__name__}): run_batch must return a dict of "
                    f"lists of {len(chunk)} items, got {shape}"
                )
            outputs.extend(dict(zip(result, values)) for values in zip(*result.values()))
            if not result:
                outputs.extend({} for _ in chunk)
        return outputs

    def run(
        self,
        inputs: Sequence[dict[str, Any]],
        trace: bool = False,
        item_ids: Sequence[str] | None = None,
    ) -> RunResult:
        """Run the pipeline over ``inputs`` (one dict per item, flat or nested as in ``Pipeline.run``).

        ``item_ids`` names the items in error messages (defaults to their positions).
        """
        started = time.perf_counter()
        self.warm_up()
        n = len(inputs)
        given = [self.distribute(data) for data in inputs]
        results: dict[str, list[dict | None]] = {}
        stats: dict[str, NodeStats] = {}
        for node in self._nodes:
            node_stats = NodeStats(node.name, type(node.instance).__name__, batched=node.run_batch is not None)
            stats[node.name] = node_stats
            ready: list[int] = []
            kwargs: list[dict] = []
            for i in range(n):
                args = self._gather(node, i, given[i].get(node.name, {}), results)
                if args is not None:
                    ready.append(i)
                    kwargs.append(args)
            node_results: list[dict | None] = [None] * n
            if ready:
                call_started = time.perf_counter()
                try:
                    outputs = self._call(node, ready, kwargs, node_stats)
                except PipelineRunError:
                    raise
                except Exception as exc:
                    names = [str(item_ids[i]) if item_ids else str(i) for i in ready[:3]]
                    more = f" and {len(ready) - 3} more" if len(ready) > 3 else ""
                    raise PipelineRunError(
                        f"component '{node.name}' ({type(node.instance).__name__}) failed on items "
                        f"{', '.join(names)}{more}: {type(exc).__name__}: {exc}"
                    ) from exc
                node_stats.wall_s = time.perf_counter() - call_started
                node_stats.items = len(ready)
                for i, out in zip(ready, outputs):
                    node_results[i] = out
            results[node.name] = node_results
        final = []
        for i in range(n):
            item: dict[str, dict[str, Any]] = {}
            for node in self._nodes:
                out = results[node.name][i]
                if out is None:
                    continue
                leaves = {s: out[s] for s in node.leaf_outputs if s in out}
                if leaves:
                    item[node.name] = leaves
            final.append(item)
        traces = None
        if trace:
            traces = [
                {node.name: results[node.name][i] for node in self._nodes if results[node.name][i] is not None}
                for i in range(n)
            ]
        return RunResult(final, stats, self.fingerprints, time.perf_counter() - started, traces)
