"""The batched graph runner (docs/concepts/runner.md).

:class:`BatchRunner` executes a loaded ``haystack.Pipeline`` over a list of inputs node by node in
topological order. For each node it gathers every item's inputs (pipeline inputs, upstream outputs
with Haystack's type conversions, defaults of optional sockets, variadic sockets joined as Haystack
joins them), then calls the component's ``run_batch`` once per chunk of at most ``batch_size`` items,
or maps ``run`` over the items when the component has no ``run_batch``. An item whose mandatory input
never arrived (a branch that did not fire) skips the node, as under ``Pipeline.run``.

Per item it returns what ``Pipeline.run`` returns for that item (the outputs that no other component
consumes, plus every output of the nodes named in ``include_outputs_from``), optionally a trace of
every node's outputs, and per node the wall time, call count and batch sizes.

With a :class:`~hopstack.graphs.node_cache.NodeCache`, a node's outputs for an item are looked up by
the node's fingerprint and the item's inputs before anything runs, from the outputs backwards: a node
runs only for the items whose outputs some wanted node still lacks, and it is warmed up (models
loaded, index opened) only when it runs at all. A fully cached rerun loads the final outputs and
computes nothing.
"""

import itertools
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from haystack import Pipeline
from haystack.core.type_utils import _convert_value

from hopstack.core.roles import Batched
from hopstack.core.spec import pipeline_inputs
from hopstack.errors import ComponentInputError, HopstackInputError, PipelineRunError
from hopstack.graphs.fingerprint import input_digest, pipeline_fingerprints
from hopstack.graphs.node_cache import SKIPPED, NodeCache, entry_key
from hopstack.models.cache import saved_compute

DEFAULT_BATCH_SIZE = 256
Progress = Callable[[str, int, int], None]

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
    cached: int = 0
    cached_compute_s: float = 0.0
    call_cached_s: float = 0.0
    warm_up_s: float = 0.0
    cache_s: float = 0.0

    @property
    def compute_s(self) -> float:
        """What computing this run's items cost as if no cache had served any model call."""
        return self.wall_s + self.call_cached_s

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe summary: ``items`` computed and ``cached`` items served from the node cache; seconds
        spent computing (``wall_s``), what the cached items took when they were computed
        (``cached_compute_s``), what the model calls the call cache served took when they were made
        (``call_cached_s``), warming up and reading/writing the cache."""
        return {
            "type": self.type,
            "batched": self.batched,
            "calls": self.calls,
            "items": self.items,
            "cached": self.cached,
            "wall_s": self.wall_s,
            "cached_compute_s": self.cached_compute_s,
            "call_cached_s": self.call_cached_s,
            "warm_up_s": self.warm_up_s,
            "cache_s": self.cache_s,
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

    :param pipeline: a loaded ``haystack.Pipeline`` (see :func:`hopstack.spec.loading.load_pipeline`).
    :param batch_size: the most items one ``run_batch`` call receives; larger batches are cut into
        chunks. Defaults to ``metadata.hopstack.batch_size`` or 256.
    :param node_cache: serve and store node outputs per item (off when ``None`` or disabled).
    """

    def __init__(self, pipeline: Pipeline, batch_size: int | None = None, node_cache: NodeCache | None = None):
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
        self.node_cache = node_cache if node_cache is not None and node_cache.enabled else None
        self._warm: set[str] = set()
        self._progress: Progress = _no_progress

    def _plan(self, name: str) -> _Node:
        graph = self.pipeline.graph
        incoming: dict[str, list[_Incoming]] = {}
        for sender, _, edge in sorted(graph.in_edges(name, data=True), key=lambda e: e[0]):
            incoming.setdefault(edge["to_socket"].name, []).append(
                _Incoming(sender, edge["from_socket"].name, edge.get("conversion_strategy"))
            )
        outputs = graph.nodes[name]["output_sockets"]
        instance = graph.nodes[name]["instance"]
        return _Node(
            name=name,
            instance=instance,
            sockets=graph.nodes[name]["input_sockets"],
            incoming=incoming,
            leaf_outputs=[s for s, sock in outputs.items() if not sock.receivers],
            output_names=list(outputs),
            run_batch=instance.run_batch if isinstance(instance, Batched) else None,
        )

    def warm_up(self) -> None:
        """Warm up every component (load models, build indexes) once; :meth:`run` otherwise warms up each
        node the first time it has something to compute."""
        for node in self._nodes:
            self._warm_up_node(node)

    def _warm_up_node(self, node: _Node) -> float:
        """Warm up one node once; returns the seconds it took. A failure names the node: bad input (a
        missing index, say) as :class:`ComponentInputError`, anything else as :class:`PipelineRunError`."""
        if node.name in self._warm:
            return 0.0
        started = time.perf_counter()
        warm_up = getattr(node.instance, "warm_up", None)
        where = f"component '{node.name}' ({type(node.instance).__name__})"
        try:
            if callable(warm_up):
                warm_up()
        except HopstackInputError as exc:
            raise ComponentInputError(f"{where}: {exc}", node=node.name) from exc
        except Exception as exc:
            raise PipelineRunError(f"{where} failed to warm up: {type(exc).__name__}: {exc}", node=node.name) from exc
        self._warm.add(node.name)
        return time.perf_counter() - started

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
        self,
        node: _Node,
        n: int,
        given: dict[tuple[str, str], list],
        results: dict[str, dict[str, list]],
        positions: list[int] | None = None,
    ) -> tuple[list[int] | None, dict[str, list]]:
        """The arguments for ``node`` of every item (or of the items at ``positions``) as columns, and
        which of those items are ready.

        Returns ``(None, columns)`` when all of them are ready, else ``(ready item indices, columns of the
        ready items)``. An item is not ready when a mandatory input has no value for it. In the common
        case (all items, one source per socket, every item ready) upstream columns are passed on without
        copying.
        """
        count = n if positions is None else len(positions)
        missing = [False] * count
        columns: dict[str, list] = {}
        for socket_name, socket in node.sockets.items():
            sources = []
            if (node.name, socket_name) in given:
                sources.append(_take(given[(node.name, socket_name)], positions))
            for link in node.incoming.get(socket_name, ()):
                column = results[link.sender].get(link.sender_socket)
                if column is None:
                    continue
                column = _take(column, positions)
                if link.conversion:
                    column = [v if v is _MISSING else _converted(v, link.conversion) for v in column]
                sources.append(column)
            if socket.is_variadic:
                column = [_join_variadic(socket, [source[i] for source in sources]) for i in range(count)]
            elif len(sources) == 1:
                column = sources[0]
            elif sources:
                column = [next((s[i] for s in sources if s[i] is not _MISSING), _MISSING) for i in range(count)]
            else:
                column = [_MISSING] * count
            if any(v is _MISSING for v in column):
                if socket.is_mandatory:
                    missing = [m or v is _MISSING for m, v in zip(missing, column)]
                else:
                    column = [socket.default_value if v is _MISSING else v for v in column]
            columns[socket_name] = column
        if not any(missing):
            return None, columns
        ready = [j for j in range(count) if not missing[j]]
        columns = {name: [column[j] for j in ready] for name, column in columns.items()}
        return (ready if positions is None else [positions[j] for j in ready]), columns

    def _call(self, node: _Node, columns: dict[str, list], count: int, stats: NodeStats) -> dict[str, list]:
        """Call the component on ``count`` items; returns one column per output socket."""
        outputs: dict[str, list] = {name: [] for name in node.output_names}
        if node.run_batch is None:
            names = list(columns)
            for j in range(count):
                result = node.instance.run(**{name: columns[name][j] for name in names})
                for name, column in outputs.items():
                    column.append(result.get(name, _MISSING))
                self._progress(node.name, j + 1, count)
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
                    f"lists of {size} items, got {shape}",
                    node=node.name,
                )
            for name, column in outputs.items():
                column.extend(result.get(name, [_MISSING] * size))
            self._progress(node.name, start + size, count)
        return outputs

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
        """Run the pipeline over ``inputs`` (one dict per item, flat or nested as in ``Pipeline.run``).

        ``item_ids`` names the items in error messages (defaults to their positions);
        ``include_outputs_from`` names nodes whose every output is returned, consumed or not;
        ``progress(node, done, total)`` is called when a node starts (``done`` 0, before it warms up) and as
        it works through its items. ``stats_only`` (with a node cache) computes and loads nothing: the
        result has empty outputs and, per node, what its cached items cost when they were computed.
        ``targets`` names nodes to run the pipeline up to: only they and the nodes they depend on run, and
        every output of theirs is returned (the service's ``/v1/retrieve`` runs a reader pipeline up to its
        documents this way).
        """
        if stats_only and self.node_cache is None:
            raise ValueError("stats_only needs a node cache")
        started = time.perf_counter()
        self._progress = progress or _no_progress
        n = len(inputs)
        given = self._input_columns(inputs)
        wanted = {node.name for node in self._nodes if trace or node.leaf_outputs or node.name in include_outputs_from}
        skipped: set[str] = set()
        if targets is not None:
            unknown = sorted(set(targets) - set(self.pipeline.graph.nodes))
            if unknown:
                raise ValueError(f"unknown target node(s) {unknown}")
            needed = set(targets).union(*(nx.ancestors(self.pipeline.graph, name) for name in targets))
            skipped = {node.name for node in self._nodes} - needed
            wanted = (wanted - skipped) | set(targets)
            include_outputs_from = {*include_outputs_from, *targets}
        if stats_only:
            wanted = set()
        stats = {
            node.name: NodeStats(node.name, type(node.instance).__name__, batched=node.run_batch is not None)
            for node in self._nodes
        }
        hits, todo, keys = self._cached_outputs(inputs, wanted, stats)
        results: dict[str, dict[str, list]] = {}
        ran: dict[str, set[int] | None] = {}  # the items each node ran for (or came from the cache); None: all
        for node in self._nodes:
            node_stats = stats[node.name]
            positions = [] if node.name in skipped else todo.get(node.name)  # None: every item
            ready, outputs = None, {}
            if positions is None or positions:
                ready, outputs = self._compute(node, n, given, results, positions, node_stats, item_ids)
                if ready is None and positions is not None:
                    ready = positions
            if positions is None and ready is None:  # computed for every item
                ran[node.name] = None
                results[node.name] = outputs
            else:
                node_hits = hits.get(node.name, {})
                ran[node.name] = set(ready or ()) | {i for i, value in node_hits.items() if value is not SKIPPED}
                results[node.name] = _spread(node, n, ready or [], outputs, node_hits)
            if self.node_cache is not None and positions:
                started_put = time.perf_counter()
                item_s = node_stats.compute_s / max(node_stats.items, 1)
                self.node_cache.put_many(_entries(node, positions, ready or [], outputs, keys[node.name], item_s))
                node_stats.cache_s += time.perf_counter() - started_put
        extra = set(include_outputs_from)
        final = [self._item_outputs(results, i, leaves_only=True, extra=extra) for i in range(n)]
        traces = None
        if trace:
            traces = [self._item_outputs(results, i, leaves_only=False, ran=ran) for i in range(n)]
        return RunResult(final, stats, self.fingerprints, time.perf_counter() - started, traces)

    def _cached_outputs(
        self, inputs: Sequence[dict[str, Any]], wanted: set[str], stats: dict[str, NodeStats]
    ) -> tuple[dict[str, dict[int, Any]], dict[str, list[int]], dict[str, dict[int, str]]]:
        """What the node cache already holds, and what is left to compute.

        Walks the nodes from the outputs backwards: a wanted node needs every item; a node needs the items
        that a node it feeds needs and did not find in the cache. Returns ``(hits, todo, keys)``: per node,
        the cached outputs by item, the items to compute (all of them when there is no cache: ``todo`` is
        empty), and the cache key of every needed item.
        """
        if self.node_cache is None:
            return {}, {}, {}
        n = len(inputs)
        digests = [input_digest(data) for data in inputs]
        needed = {node.name: set(range(n)) if node.name in wanted else set() for node in self._nodes}
        hits: dict[str, dict[int, Any]] = {}
        todo: dict[str, list[int]] = {}
        keys: dict[str, dict[int, str]] = {}
        for node in reversed(self._nodes):
            started = time.perf_counter()
            items = sorted(needed[node.name])
            node_keys = keys[node.name] = {i: entry_key(self.fingerprints[node.name], digests[i]) for i in items}
            found = self.node_cache.get_many(node_keys.values())
            hits[node.name] = {i: found[key][0] for i, key in node_keys.items() if key in found}
            misses = todo[node.name] = [i for i in items if node_keys[i] not in found]
            for upstream in self.pipeline.graph.predecessors(node.name):
                needed[upstream].update(misses)
            # items nobody needs from this node still report what they cost when they were computed
            unneeded = [entry_key(self.fingerprints[node.name], digests[i]) for i in range(n) if i not in node_keys]
            stats[node.name].cached = len(hits[node.name])
            stats[node.name].cached_compute_s = sum(found[node_keys[i]][1] for i in hits[node.name]) + sum(
                self.node_cache.seconds_many(unneeded).values()
            )
            stats[node.name].cache_s += time.perf_counter() - started
        return hits, todo, keys

    def _compute(
        self,
        node: _Node,
        n: int,
        given: dict[tuple[str, str], list],
        results: dict[str, dict[str, list]],
        positions: list[int] | None,
        stats: NodeStats,
        item_ids: Sequence[str] | None,
    ) -> tuple[list[int] | None, dict[str, list]]:
        """Run ``node`` for the ready items among ``positions`` (all items when None); returns the ready
        items (None: all of ``positions``) and one output column over them per socket."""
        ready, columns = self._gather(node, n, given, results, positions)
        count = (n if positions is None else len(positions)) if ready is None else len(ready)
        if count == 0:
            return ready, {}
        self._progress(node.name, 0, count)  # shown while the node warms up and computes its first batch
        stats.warm_up_s += self._warm_up_node(node)
        call_started = time.perf_counter()
        try:
            with saved_compute() as saved:
                outputs = self._call(node, columns, count, stats)
        except PipelineRunError:
            raise
        except Exception as exc:
            failing = ready if ready is not None else (positions if positions is not None else list(range(n)))
            names = [str(item_ids[i]) if item_ids else str(i) for i in failing[:3]]
            more = f" and {len(failing) - 3} more" if len(failing) > 3 else ""
            raise PipelineRunError(
                f"component '{node.name}' ({type(node.instance).__name__}) failed on items "
                f"{', '.join(names)}{more}: {type(exc).__name__}: {exc}",
                node=node.name,
            ) from exc
        stats.wall_s += time.perf_counter() - call_started
        stats.call_cached_s += saved.seconds
        stats.items += count
        return ready, outputs

    def _item_outputs(
        self,
        results: dict[str, dict[str, list]],
        i: int,
        leaves_only: bool,
        ran: dict[str, set[int] | None] | None = None,
        extra: set[str] = frozenset(),
    ) -> dict[str, dict[str, Any]]:
        """Item ``i``'s outputs per node: the unconsumed ones (as ``Pipeline.run``) and all of those of the
        ``extra`` nodes or, for traces, all of them for every node that ran for the item."""
        item: dict[str, dict[str, Any]] = {}
        for node in self._nodes:
            columns = results[node.name]
            names = node.leaf_outputs if leaves_only and node.name not in extra else columns
            values = {name: columns[name][i] for name in names if name in columns and columns[name][i] is not _MISSING}
            if values or (ran is not None and (ran[node.name] is None or i in ran[node.name])):
                item[node.name] = values
        return item


def _no_progress(node: str, done: int, total: int) -> None:
    """The progress callback of a run nobody watches."""


def _take(column: list, positions: list[int] | None) -> list:
    """The values of ``column`` at ``positions`` (the column itself when None)."""
    return column if positions is None else [column[i] for i in positions]


def _spread(node: _Node, n: int, ready: list[int], outputs: dict[str, list], hits: dict[int, Any]) -> dict[str, list]:
    """Full output columns of a node: computed values at ``ready``, cached ones at their items, and
    _MISSING elsewhere."""
    columns = {name: [_MISSING] * n for name in node.output_names}
    for name, column in outputs.items():
        full = columns[name]
        for i, value in zip(ready, column):
            full[i] = value
    for i, values in hits.items():
        if values is not SKIPPED:
            for name, value in values.items():
                columns[name][i] = value
    return columns


def _entries(
    node: _Node, positions: list[int], ready: list[int], outputs: dict[str, list], keys: dict[int, str], item_s: float
) -> dict[str, tuple[Any, float]]:
    """Cache entries for the items a node was asked to compute: ``(outputs, seconds per item)`` where it
    ran, ``(SKIPPED, 0)`` where a mandatory input never arrived."""
    entries: dict[str, tuple[Any, float]] = {keys[i]: (SKIPPED, 0.0) for i in positions}
    for j, i in enumerate(ready):
        values = {name: column[j] for name, column in outputs.items() if column[j] is not _MISSING}
        entries[keys[i]] = (values, item_s)
    return entries


def _converted(value: Any, conversion: Any) -> Any:
    """``value`` converted by a connection's ``conversion_strategy`` (wrap, unwrap, str to ChatMessage and
    back) as ``Pipeline.run`` converts it. Haystack has no public API for this conversion, so its private
    ``haystack.core.type_utils._convert_value`` is called here and nowhere else."""
    return _convert_value(value, conversion)


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
