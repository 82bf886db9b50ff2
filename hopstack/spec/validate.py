"""Validation of pipeline YAML files before anything runs (docs/concepts/pipelines.md#validation).

Every problem is collected and reported with the file, line and column, the component and the socket:
YAML syntax errors, a schema that Haystack would not load, component types outside the module
allowlist or not found (with the nearest known names), unknown or missing init parameters, connections
to unknown components or sockets, type-incompatible connections, cycles (hopstack pipelines are DAGs:
loops live inside one iterate component, docs/concepts/iteration.md) and mandatory inputs that nothing feeds.
"""

import functools
import re
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

import networkx as nx
import yaml
from haystack import Pipeline
from haystack import component as haystack_component
from haystack.core.component.types import InputSocket, OutputSocket
from haystack.core.errors import PipelineConnectError
from haystack.core.serialization import component_from_dict

from hopstack.core.spec import (
    SpecError,
    check_spec,
    is_spec,
    parameter_problems,
    pipeline_inputs,
    resolve_component_class,
)
from hopstack.core.text import did_you_mean, nearest, short_repr
from hopstack.errors import HopstackInputError

TOP_LEVEL_KEYS = {"components", "connections", "metadata", "max_runs_per_component", "connection_type_validation"}
HOPSTACK_METADATA_KEYS = {"inputs", "batch_size", "description"}


@dataclass(frozen=True)
class Problem:
    """One validation problem, located in the file."""

    source: str
    line: int
    column: int
    message: str
    component: str | None = None
    socket: str | None = None

    def __str__(self) -> str:
        where = ""
        if self.component is not None:
            where = f"component '{self.component}'"
            if self.socket is not None:
                where += f", socket '{self.socket}'"
            where += ": "
        return f"{self.source}:{self.line}:{self.column}: {where}{self.message}"


class PipelineValidationError(HopstackInputError):
    """A pipeline file has problems; ``problems`` lists all of them."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


MAX_FILE_CHARACTERS = 1 << 18
"""Pipeline files are a few kilobytes; a longer one is refused before it is parsed."""
MAX_DEPTH = 64
"""Deepest nesting of mappings and lists read."""


if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _SafeLoader(yaml.composer.Composer, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
        """PyYAML's safe loader with libyaml's scanner and parser (about 6x faster on pipeline files) under
        PyYAML's own composer, so that :class:`_UniqueKeyLoader` sees every node as it is composed."""

        def __init__(self, stream: str):
            CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            yaml.composer.Composer.__init__(self)

else:  # a PyYAML built without libyaml
    _SafeLoader = yaml.SafeLoader


class _UniqueKeyLoader(_SafeLoader):
    """A safe loader that refuses duplicate and unhashable mapping keys (PyYAML silently keeps the last of
    duplicates), aliases (``*name``: pipeline files have no use for them, and a few hundred bytes of nested
    aliases expand to billions of items) and nesting deeper than :data:`MAX_DEPTH`."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "YAML aliases (*name) are not read in pipeline files; write the value out", event.start_mark
            )
        if self.depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, OverflowError):  # an explicit tag (!!timestamp x) that
            raise yaml.constructor.ConstructorError(  # does not fit its value
                None, None, f"cannot read {short_repr(node.value)} as {node.tag}", node.start_mark
            ) from None


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping key must be a plain value, not a list or a mapping", key_node.start_mark
            ) from None
        if key in seen:
            first = seen[key].start_mark.line + 1
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {short_repr(key)} (first defined on line {first})", key_node.start_mark
            )
        seen[key] = key_node
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


_ENTRIES: "weakref.WeakKeyDictionary[yaml.Node, dict[str, tuple[yaml.Node, yaml.Node]]]" = weakref.WeakKeyDictionary()


def _entry(node: yaml.Node | None, key: str) -> tuple[yaml.Node | None, yaml.Node | None]:
    """The key node and value node of ``key`` in a mapping node; (None, None) when absent. Each mapping is
    indexed once, so that locating every key of a large mapping stays linear."""
    if not isinstance(node, yaml.MappingNode):
        return None, None
    if node not in _ENTRIES:
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                entries.setdefault(key_node.value, (key_node, value_node))
        _ENTRIES[node] = entries
    return _ENTRIES[node].get(str(key), (None, None))


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value node under ``key`` in a mapping node, if any."""
    return _entry(node, key)[1]


def _key_node(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The key node of ``key`` in a mapping node, if any."""
    return _entry(node, key)[0]


def _node_at(node: yaml.Node | None, path: tuple[str, ...]) -> yaml.Node | None:
    """The node a key path inside a mapping points at: the value of ``type``, else the last key itself."""
    for key in path[:-1]:
        node = _child(node, key)
    if not path:
        return node
    return _child(node, path[-1]) if path[-1] == "type" else _key_node(node, path[-1])


_COMPONENT_CLASS = re.compile(r"^@component\s*\n(?:@.*\n)*class\s+(\w+)", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def known_component_types() -> list[str]:
    """Qualified names of the components that hopstack and Haystack define.

    Read from their source files (``@component`` followed by ``class Name``) rather than imported, so
    that suggesting a name neither costs seconds of imports nor runs any module's code.
    """
    import haystack.components

    import hopstack.components

    names = set(haystack_component.registry)
    for package in (hopstack.components, haystack.components):
        root = Path(package.__path__[0])
        for source in root.rglob("*.py"):
            module = ".".join((package.__name__, *source.relative_to(root).with_suffix("").parts))
            module = module.removesuffix(".__init__")
            for match in _COMPONENT_CLASS.finditer(source.read_text(encoding="utf-8", errors="replace")):
                names.add(f"{module}.{match.group(1)}")
    return sorted(names)


def _suggest_types(component_type: str) -> str:
    known = known_component_types()
    close = nearest(component_type, known)
    if not close:
        class_name = component_type.rsplit(".", 1)[-1]
        by_class = {k.rsplit(".", 1)[-1]: k for k in known}
        close = [by_class[c] for c in nearest(class_name, list(by_class))]
    return f"; nearest known types: {', '.join(close)}" if close else ""


class _Validator:
    def __init__(self, source: str):
        self.source = source
        self.problems: list[Problem] = []
        self.probe = Pipeline()  # the valid components, connected as Haystack would connect them

    def add(
        self, node: yaml.Node | None, message: str, component: str | None = None, socket: str | None = None
    ) -> None:
        mark = node.start_mark if node is not None else None
        line = mark.line + 1 if mark else 1
        column = mark.column + 1 if mark else 1
        self.problems.append(Problem(self.source, line, column, message, component, socket))

    # -- top level -------------------------------------------------------------------------
    def validate(self, text: str) -> dict[str, Any] | None:
        try:
            root, data = load_yaml(text)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            reason = " ".join(filter(None, [exc.context, exc.problem]))
            self.problems.append(Problem(self.source, line, column, f"YAML syntax error: {reason}"))
            return None
        except yaml.YAMLError as exc:
            self.problems.append(Problem(self.source, 1, 1, f"YAML error: {exc}"))
            return None
        except UnicodeEncodeError as exc:  # a str that no file holds: a lone surrogate
            line, column = text.count("\n", 0, exc.start) + 1, exc.start - text.rfind("\n", 0, exc.start)
            message = f"not text: a lone surrogate (U+{ord(text[exc.start]):04X})"
            self.problems.append(Problem(self.source, line, column, message))
            return None
        if not isinstance(data, dict):
            self.add(root, "a pipeline file must be a mapping with 'components' and 'connections'")
            return None
        for key in data:
            if key not in TOP_LEVEL_KEYS:
                self.add(
                    _key_node(root, key),
                    f"unknown top-level key '{key}' (Haystack would drop it; put hopstack settings under "
                    f"'metadata: {{hopstack: ...}}'){did_you_mean(str(key), sorted(TOP_LEVEL_KEYS))}",
                )
        self._check_metadata(data.get("metadata"), _child(root, "metadata"))
        sockets = self._check_components(data.get("components"), _child(root, "components"), root)
        edges = self._check_connections(data.get("connections"), _child(root, "connections"), sockets)
        if sockets is not None and edges is not None:
            self._check_cycles(edges)
            self._check_senders(edges, _child(root, "components"))
            named = _named_receivers(data.get("connections"))
            inputs = pipeline_inputs(data.get("metadata"))
            self._check_unfed_inputs(sockets, edges, named, inputs, _child(root, "components"))
        return data

    def _check_metadata(self, metadata: Any, node: yaml.Node | None) -> None:
        if metadata is None:
            return
        if not isinstance(metadata, dict):
            self.add(node, "'metadata' must be a mapping")
            return
        settings = metadata.get("hopstack")
        settings_node = _child(node, "hopstack")
        if settings is None:
            return
        if not isinstance(settings, dict):
            self.add(settings_node, "'metadata.hopstack' must be a mapping")
            return
        for key in settings:
            if key not in HOPSTACK_METADATA_KEYS:
                self.add(
                    _key_node(settings_node, key),
                    f"unknown hopstack setting '{key}'{did_you_mean(str(key), sorted(HOPSTACK_METADATA_KEYS))}",
                )
        inputs = settings.get("inputs")
        if inputs is not None and not (isinstance(inputs, list) and all(isinstance(i, str) for i in inputs)):
            self.add(_child(settings_node, "inputs"), "'metadata.hopstack.inputs' must be a list of socket names")
        batch_size = settings.get("batch_size")
        if batch_size is not None and not (isinstance(batch_size, int) and batch_size >= 1):
            self.add(_child(settings_node, "batch_size"), "'metadata.hopstack.batch_size' must be a positive integer")

    # -- components ------------------------------------------------------------------------
    def _check_components(
        self, components: Any, node: yaml.Node | None, root: yaml.Node
    ) -> dict[str, tuple[dict[str, InputSocket], dict[str, OutputSocket]]] | None:
        if components is None:
            self.add(root, "missing 'components'")
            return None
        if not isinstance(components, dict) or not components:
            self.add(node, "'components' must be a non-empty mapping of component names to {type, init_parameters}")
            return None
        sockets: dict[str, tuple[dict[str, InputSocket], dict[str, OutputSocket]]] = {}
        for name, spec in components.items():
            if not isinstance(name, str):
                self.add(_key_node(node, name) or node, f"a component name must be text, got {short_repr(name)}")
                continue
            spec_node = _child(node, name)
            instance = self._check_component(str(name), spec, spec_node, _key_node(node, name))
            sockets[str(name)] = None  # type: ignore[assignment]  # known name, unknown sockets
            if instance is None:
                continue
            try:  # the component's sockets, as a pipeline sees them (Haystack's public graph attributes)
                self.probe.add_component(str(name), instance)
            except Exception as exc:  # noqa: BLE001 - Haystack refuses the name or the instance
                self.add(_key_node(node, name), f"cannot add the component to a pipeline: {exc}", str(name))
                continue
            attributes = self.probe.graph.nodes[str(name)]
            sockets[str(name)] = (dict(attributes["input_sockets"]), dict(attributes["output_sockets"]))
        return sockets

    def _check_component(self, name: str, spec: Any, node: yaml.Node | None, key_node: yaml.Node | None) -> Any:
        if not isinstance(spec, dict):
            self.add(node or key_node, "a component must be a mapping with 'type' and 'init_parameters'", name)
            return None
        for key in spec:
            if key not in ("type", "init_parameters"):
                self.add(_key_node(node, key), f"unknown key '{key}' (expected 'type' and 'init_parameters')", name)
        component_type = spec.get("type")
        type_node = _child(node, "type") or node
        if component_type is None:
            self.add(node, "missing 'type'", name)
            return None
        try:
            cls = resolve_component_class(component_type)
        except PermissionError as exc:
            self.add(type_node, str(exc), name)
            return None
        except ValueError as exc:
            self.add(type_node, f"{exc}{_suggest_types(str(component_type))}", name)
            return None
        init_parameters = spec.get("init_parameters")
        init_parameters = {} if init_parameters is None else init_parameters
        params_node = _child(node, "init_parameters")
        if not isinstance(init_parameters, dict):
            self.add(params_node, "'init_parameters' must be a mapping", name)
            return None
        bad = False
        for key, at, problem in parameter_problems(cls, init_parameters):
            bad = True
            located = None if key is None else (_key_node if at == "key" else _child)(params_node, key)
            self.add(located or params_node or node, problem, name)
        for key, value in init_parameters.items():
            if is_spec(value):
                bad = self._check_nested(str(key), value, _child(params_node, key), name) or bad
        if bad:
            return None
        try:
            return component_from_dict(cls, {"type": component_type, "init_parameters": init_parameters}, name)
        except Exception as exc:  # noqa: BLE001 - any constructor error is a problem of this file
            at = _key_node(params_node, exc.where.split(".")[0]) if isinstance(exc, SpecError) else None
            self.add(at or params_node or node, f"cannot create {cls.__name__}: {exc}", name)
            return None

    def _check_nested(self, where: str, spec: dict[str, Any], node: yaml.Node | None, component: str) -> bool:
        """Report the problems of a nested spec ``{type, init_parameters}``, and of the specs nested in it, at
        their own keys; True when there was one."""
        try:
            _, params = check_spec(spec, where)
        except SpecError as exc:
            self.add(_node_at(node, exc.path) or node, str(exc), component)
            return True
        params_node = _child(node, "init_parameters")
        found = False
        for key, value in params.items():
            if is_spec(value) and self._check_nested(f"{where}.{key}", value, _child(params_node, key), component):
                found = True
        return found

    # -- connections -----------------------------------------------------------------------
    def _endpoint(self, text: Any, node: yaml.Node | None, sockets: dict, output: bool) -> tuple[str, str] | None:
        role = "sender" if output else "receiver"
        if not isinstance(text, str) or not text:
            self.add(node, f"{role} must be 'component.socket', got {short_repr(text)}")
            return None
        name, _, socket_name = text.partition(".")
        if name not in sockets:
            self.add(node, f"{role} names unknown component '{name}'{did_you_mean(name, sorted(sockets))}", name)
            return None
        if sockets[name] is None:
            return None  # the component itself is broken and already reported
        available = sockets[name][1 if output else 0]
        kind = "output" if output else "input"
        if not socket_name:
            if len(available) != 1:
                self.add(node, f"'{name}' has {kind} sockets {sorted(available)}; name one as '{name}.SOCKET'", name)
                return None
            socket_name = next(iter(available))
        if socket_name not in available:
            self.add(
                node,
                f"unknown {kind} socket '{socket_name}'; {kind}s are {sorted(available)}"
                f"{did_you_mean(socket_name, sorted(available))}",
                name,
                socket_name,
            )
            return None
        return name, socket_name

    def _check_connections(self, connections: Any, node: yaml.Node | None, sockets: dict | None) -> list | None:
        if connections is None and node is not None:  # written but empty: Haystack cannot load it
            self.add(node, "'connections' must be a list of {sender, receiver}; write [] for none")
            return None
        if connections is None:
            return []
        if not isinstance(connections, list):
            self.add(node, "'connections' must be a list of {sender, receiver}")
            return None
        if sockets is None:
            return None
        edges = []
        senders_per_socket: dict[tuple[str, str], list[str]] = {}
        for index, connection in enumerate(connections):
            item_node = node.value[index] if isinstance(node, yaml.SequenceNode) else node
            if not isinstance(connection, dict) or set(connection) != {"sender", "receiver"}:
                self.add(item_node, "a connection must be a mapping with exactly 'sender' and 'receiver'")
                continue
            sender = self._endpoint(connection["sender"], _child(item_node, "sender"), sockets, output=True)
            receiver = self._endpoint(connection["receiver"], _child(item_node, "receiver"), sockets, output=False)
            if sender is None or receiver is None:
                continue
            if sender[0] == receiver[0]:
                self.add(
                    item_node,
                    "a component cannot be connected to itself (use an iterate component for loops)",
                    sender[0],
                )
                continue
            out_socket = sockets[sender[0]][1][sender[1]]
            in_socket = sockets[receiver[0]][0][receiver[1]]
            senders = senders_per_socket.setdefault(receiver, [])
            if sender[0] in senders:
                self.add(item_node, f"'{sender[0]}' is already connected to this socket", receiver[0], receiver[1])
                continue
            if senders and not _accepts_several(in_socket):
                self.add(
                    item_node,
                    f"already fed by '{senders[0]}'; only list-typed or Variadic sockets take several senders",
                    receiver[0],
                    receiver[1],
                )
                continue
            try:  # Haystack's own connection rules, types included
                self.probe.connect(".".join(sender), ".".join(receiver))
            except PipelineConnectError:
                self.add(
                    item_node,
                    f"type mismatch: '{sender[0]}.{sender[1]}' sends {type_label(out_socket.type)} but "
                    f"'{receiver[0]}.{receiver[1]}' takes {type_label(in_socket.type)}",
                    receiver[0],
                    receiver[1],
                )
                continue
            senders.append(sender[0])
            edges.append((sender, receiver, item_node))
        return edges

    def _check_cycles(self, edges: list) -> None:
        graph = nx.DiGraph()
        for (sender, _), (receiver, _), item_node in edges:
            graph.add_edge(sender, receiver, node=item_node)
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            return
        path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
        closing = graph.edges[cycle[-1][0], cycle[-1][1]]["node"]
        self.add(
            closing,
            f"cycle {path}: hopstack pipelines are DAGs. Put the loop inside one iterate component "
            "(hopstack.components.iterate, which holds the retriever, query reformulator and stopper as "
            "nested components and stops on a hop budget; docs/concepts/iteration.md)",
            cycle[-1][1],
        )

    def _check_senders(self, edges: list, components: yaml.Node | None) -> None:
        """Ask each component that defines ``connection_problems(senders)`` (``{socket: [sender, ...]}``, senders
        sorted by name as Haystack feeds a variadic socket) whether its init parameters fit what is connected
        to it; each problem is ``(parameter, message)`` and is reported at that parameter."""
        senders: dict[str, dict[str, list[str]]] = {}
        for (sender, _), (receiver, socket), _ in edges:
            senders.setdefault(receiver, {}).setdefault(socket, []).append(sender)
        for name, fed in senders.items():
            check = getattr(self.probe.get_component(name), "connection_problems", None)
            for parameter, message in check({s: sorted(names) for s, names in fed.items()}) if callable(check) else ():
                where = _node_at(components, (name, "init_parameters", parameter)) or _child(components, name)
                self.add(where, message, name)

    def _check_unfed_inputs(
        self, sockets: dict, edges: list, named: set, inputs: tuple[str, ...], node: yaml.Node | None
    ) -> None:
        """Report mandatory inputs that nothing feeds; a socket some connection names as its receiver counts
        as fed even when that connection was refused (its problem is reported already)."""
        fed = {receiver for _, receiver, _ in edges} | named
        for name, pair in sockets.items():
            if pair is None:
                continue
            for socket_name, socket in pair[0].items():
                if socket.is_mandatory and (name, socket_name) not in fed and socket_name not in inputs:
                    self.add(
                        _child(node, name),
                        f"mandatory input '{socket_name}' is not connected and is not a pipeline input "
                        f"(pipeline inputs: {', '.join(inputs)}; declare more under metadata.hopstack.inputs)",
                        name,
                        socket_name,
                    )


def _named_receivers(connections: Any) -> set[tuple[str, str]]:
    """The ``(component, socket)`` receivers that the connections name, whether or not they are valid."""
    if not isinstance(connections, list):
        return set()
    receivers = (c.get("receiver") for c in connections if isinstance(c, dict))
    return {tuple(r.split(".", 1)) for r in receivers if isinstance(r, str) and r.count(".") == 1}


def _accepts_several(socket: InputSocket) -> bool:
    """Whether Haystack lets several senders feed ``socket`` (variadic, or list-typed and made variadic)."""
    if socket.is_variadic:
        return True
    if get_origin(socket.type) is list:
        return True
    args = [a for a in get_args(socket.type) if a is not type(None)]
    return bool(args) and all(get_origin(a) is list for a in args)


def type_label(socket_type: Any) -> str:
    """A socket type as people write it: ``list[Document]``, ``str | None``."""
    if isinstance(socket_type, type) and not get_args(socket_type):
        return socket_type.__name__
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(\w+)", r"\1", repr(socket_type))


def load_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (with each node's line and column) and the data of YAML ``text``, parsed once, safely:
    duplicate and unhashable keys, aliases and nesting deeper than :data:`MAX_DEPTH` raise ``yaml.YAMLError``."""
    loader = _UniqueKeyLoader(text)
    try:
        root = loader.get_single_node()
        return root, None if root is None else loader.construct_document(root)
    finally:
        loader.dispose()


def validate_text(text: str, source: str = "<string>") -> tuple[dict[str, Any] | None, list[Problem]]:
    """Validate pipeline YAML text; returns the parsed data (when it parsed) and every problem found. It
    never raises: an unexpected failure of a check is reported as a problem too."""
    if len(text) > MAX_FILE_CHARACTERS:
        return None, [
            Problem(source, 1, 1, f"over {MAX_FILE_CHARACTERS:,} characters; pipeline files are read up to that")
        ]
    validator = _Validator(source)
    try:
        data = validator.validate(text)
    except RecursionError:
        return None, [*validator.problems, Problem(source, 1, 1, "nested too deeply to check")]
    except Exception as exc:  # noqa: BLE001 - a check that fails on odd input is a problem of the file
        problem = Problem(source, 1, 1, f"cannot check this file: {type(exc).__name__}: {short_repr(str(exc), 200)}")
        return None, [*validator.problems, problem]
    return data, validator.problems


def validate_file(path: str | Path) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Validate a pipeline file; an unreadable file is one problem, not an exception."""
    path = Path(path)
    try:
        if path.exists() and not path.is_file():
            return None, [Problem(str(path), 1, 1, "cannot read the file: not a regular file")]
        with path.open(encoding="utf-8") as file:
            text = file.read(MAX_FILE_CHARACTERS + 1)  # what validate_text refuses is not read whole
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(str(path), 1, 1, f"cannot read the file: {exc}")]
    return validate_text(text, str(path))
