"""Node fingerprints (docs/concepts/caching.md).

A node's fingerprint is a hash of its component type, its init parameters (as Haystack serialises
them), what it reads besides them (a component may define ``content_identity() -> str``, e.g. the
manifest of the index a retriever reads, so that rebuilding the index changes the fingerprint) and, per
input socket, where the value comes from: the fingerprint and socket of the sender, or the pipeline
input of that name. Two nodes in different pipelines with the same fingerprint compute
the same function of the same questions, so a comparison runs them once and a cache keyed by
``(fingerprint, input digest)`` can serve their outputs again.
"""

import hashlib
import json
from typing import Any

import networkx as nx
from haystack import Pipeline
from haystack.core.serialization import component_to_dict

from hopstack.core.roles import ReadsContent


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr, ensure_ascii=False)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def pipeline_fingerprints(pipeline: Pipeline) -> dict[str, str]:
    """Fingerprint of every node of ``pipeline``, computed in topological order."""
    graph = pipeline.graph
    fingerprints: dict[str, str] = {}
    for name in nx.lexicographical_topological_sort(graph):
        instance = graph.nodes[name]["instance"]
        serialised = component_to_dict(instance, name)
        sources: dict[str, list[list[str]]] = {}
        for sender, _, edge in graph.in_edges(name, data=True):
            sources.setdefault(edge["to_socket"].name, []).append([fingerprints[sender], edge["from_socket"].name])
        for socket_name in graph.nodes[name]["input_sockets"]:
            if socket_name not in sources:
                sources[socket_name] = [["pipeline-input", socket_name]]
        payload = {
            "type": serialised.get("type"),
            "init_parameters": serialised.get("init_parameters", {}),
            "reads": instance.content_identity() if isinstance(instance, ReadsContent) else None,
            "inputs": {socket: sorted(values) for socket, values in sorted(sources.items())},
        }
        fingerprints[name] = _digest(_canonical(payload))
    return fingerprints


def input_digest(inputs: dict[str, Any]) -> str:
    """A stable digest of one item's inputs to a node, for per-item cache keys."""
    return _digest(_canonical({key: _jsonable(value) for key, value in inputs.items()}))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value
