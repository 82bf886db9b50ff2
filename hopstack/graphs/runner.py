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
    output_names: list[str]
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
        self._receivers: dict[str, list[str]] = {}
        for name, sockets in pipeline.inputs().items():
            for socket_name in sockets:
                self._receivers.setdefault(socket_name, []).append(name)
        self.input_names = sorted(self._receivers)
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
            output_names=list(outputs),
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
            declared = list(pipeline_inputs(self.pipeline.metadata))
            raise HopstackInputError(
                f"no pipeline input takes the question: declared inputs {declared}, "
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
            receivers = self._receivers.get(key)
            if not receivers:
                raise HopstackInputError(f"input '{key}' feeds no component; pipeline inputs are {self.input_names}")
            for name in receivers:
                nested.setdefault(name, {})[key] = value
        return nested

    def _input_columns(self, inputs: Sequence[dict[str, Any]]) -> dict[tuple[str, str], list]:
        """Pipeline inputs as columns: ``(component, socket)`` -> one value (or _MISSING) per item."""
        n = len(inputs)
        columns: dict[tuple[str, str], list] = {}
        for i, data in enumerate(inputs):
            for name, sockets in self.distribute(data).items():
                for socket_name, value in sockets.items():
                    column = columns.get((name, socket_name))
                    if column is None:
                        column = columns[(name, socket_name)] = [_MISSING] * n
                    column[i] = value
        return columns

    # -- execution ---------------------------------------------------------------------------
    def _gather(
        self, node: _Node, n: int, given: dict[tuple[str, str], list], results: dict[str, dict[str, list]]
    ) -> tuple[list[int] | None, dict[str, list]]:
        """Every item's arguments for ``node`` as columns, and which items are ready.

        Returns ``(None, columns)`` when all items are ready, else ``(ready item indices, columns of the
        ready items)``. An item is not ready when a mandatory input has no value for it. In the common
        case (one source per socket, every item ready) upstream columns are passed on without copying.
        """
        missing = [False] * n
        columns: dict[str, list] = {}
        for socket_name, socket in node.sockets.items():
            sources = []
            if (node.name, socket_name) in given:
                sources.append(given[(node.name, socket_name)])
            for link in node.incoming.get(socket_name, ()):
                column = results[link.sender].get(link.sender_socket)
                if column is None:
                    continue
                if link.conversion:
                    column = [v if v is _MISSING else _convert_value(v, link.conversion) for v in column]
                sources.append(column)
            if socket.is_variadic:
                column = [_join_variadic(socket, [source[i] for source in sources]) for i in range(n)]
            elif len(sources) == 1:
                column = sources[0]
            elif sources:
                column = [next((s[i] for s in sources if s[i] is not _MISSING), _MISSING) for i in range(n)]
            else:
                column = [_MISSING] * n
            if any(v is _MISSING for v in column):
                if socket.is_mandatory:
                    missing = [m or v is _MISSING for m, v in zip(missing, column)]
                else:
                    column = [socket.default_value if v is _MISSING else v for v in column]
            columns[socket_name] = column
        if not any(missing):
            return None, columns
        ready = [i for i in range(n) if not missing[i]]
        return ready, {name: [column[i] for i in ready] for name, column in columns.items()}

    def _call(self, node: _Node, columns: dict[str, list], count: int, stats: NodeStats) -> dict[str, list]:
        """Call the component on ``count`` items; returns one column per output socket."""
        outputs: dict[str, list] = {name: [] for name in node.output_names}
        if node.run_batch is None:
            names = list(columns)
            for j in range(count):
                result = node.instance.run(**{name: columns[name][j] for name in names})
                for name, column in outputs.items():
                    column.append(result.get(name, _MISSING))
            stats.calls += count
            stats.batch_sizes.extend([1] * count)
            return outputs
        for start in range(0, count, self.batch_size):
            size = min(self.batch_size, count - start)
            chunk = {name: column[start : start + size] for name, column in columns.items()}
            result = node.run_batch(**chunk)
            stats.calls += 1
            stats.batch_sizes.append(size)
            if not isinstance(result, dict) or any(not isinstance(v, list) or len(v) != size for v in result.values()):
                shape = {k: len(v) if isinstance(v, list) else type(v).__name__ for k, v in dict(result or {}).items()}
                raise PipelineRunError(
                    f"component '{node.name}' ({type(node.instance).__name__}): run_batch must return a dict of "
                    f"lists of {size} items, got {shape}"
                )
            for name, column in outputs.items():
                column.extend(result.get(name, [_MISSING] * size))
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
        given = self._input_columns(inputs)
        results: dict[str, dict[str, list]] = {}
        ran: dict[str, set[int] | None] = {}  # the items each node ran for; None: all of them
        stats: dict[str, NodeStats] = {}
        for node in self._nodes:
            node_stats = stats[node.name] = NodeStats(
                node.name, type(node.instance).__name__, batched=node.run_batch is not None
            )
            ready, columns = self._gather(node, n, given, results)
            count = n if ready is None else len(ready)
            ran[node.name] = None if ready is None else set(ready)
            if count == 0:
                results[node.name] = {}
                continue
            call_started = time.perf_counter()
            try:
                outputs = self._call(node, columns, count, node_stats)
            except PipelineRunError:
                raise
            except Exception as exc:
                positions = list(range(n)) if ready is None else ready
                names = [str(item_ids[i]) if item_ids else str(i) for i in positions[:3]]
                more = f" and {len(positions) - 3} more" if len(positions) > 3 else ""
                raise PipelineRunError(
                    f"component '{node.name}' ({type(node.instance).__name__}) failed on items "
                    f"{', '.join(names)}{more}: {type(exc).__name__}: {exc}"
                ) from exc
            node_stats.wall_s = time.perf_counter() - call_started
            node_stats.items = count
            if ready is not None:  # spread the ready items' outputs back over the whole batch
                for name, column in outputs.items():
                    full = [_MISSING] * n
                    for i, value in zip(ready, column):
                        full[i] = value
                    outputs[name] = full
            results[node.name] = outputs
        final = [self._item_outputs(results, i, leaves_only=True) for i in range(n)]
        traces = None
        if trace:
            traces = [self._item_outputs(results, i, leaves_only=False, ran=ran) for i in range(n)]
        return RunResult(final, stats, self.fingerprints, time.perf_counter() - started, traces)

    def _item_outputs(
        self,
        results: dict[str, dict[str, list]],
        i: int,
        leaves_only: bool,
        ran: dict[str, set[int] | None] | None = None,
    ) -> dict[str, dict[str, Any]]:
        """Item ``i``'s outputs per node: the unconsumed ones (as ``Pipeline.run``) or, for traces, all of
        them for every node that ran for the item."""
        item: dict[str, dict[str, Any]] = {}
        for node in self._nodes:
            columns = results[node.name]
            names = node.leaf_outputs if leaves_only else columns
            values = {name: columns[name][i] for name in names if name in columns and columns[name][i] is not _MISSING}
            if values or (ran is not None and (ran[node.name] is None or i in ran[node.name])):
                item[node.name] = values
        return item


def _join_variadic(socket: Any, values: list[Any]) -> Any:
    """A variadic socket's value from its sources' values for one item, as Haystack joins them."""
    present = [v for v in values if v is not _MISSING]
    if not present:
        return _MISSING
    if socket.is_greedy:
        return [present[0]]
    if socket.wrap_input_in_list:
        return present
    return list(itertools.chain.from_iterable(present))
