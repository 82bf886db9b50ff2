"""Several pipeline variants as one graph whose nodes are their distinct fingerprints (docs/concepts/caching.md).

Variants that share a prefix (the same retrievers with the same settings over the same index, say)
share the nodes of that prefix: the union runs each distinct node once, and every variant's outputs are
read back from the union's nodes. The union is itself a Haystack pipeline, built from the variants'
own pipeline dicts, so the batched runner (and its node cache) runs it like any other.
"""

from dataclasses import dataclass, field
from typing import Any

import networkx as nx
from haystack import Pipeline

from hopstack.core.spec import pipeline_inputs
from hopstack.errors import HopstackInputError
from hopstack.graphs.fingerprint import pipeline_fingerprints


@dataclass
class VariantNodes:
    """One variant's nodes in the union: ``names`` maps its node names to union node names, ``leaves``
    its unconsumed output sockets per node that has any (``Pipeline.outputs()``, what ``Pipeline.run``
    returns for it), ``fingerprints`` its nodes' fingerprints."""

    names: dict[str, str]
    leaves: dict[str, list[str]]
    fingerprints: dict[str, str]


@dataclass
class UnionGraph:
    """The union of several variants: ``pipeline`` (one node per distinct fingerprint) and each variant's
    view of it."""

    pipeline: Pipeline
    variants: dict[str, VariantNodes]
    sharing: dict[str, list[str]] = field(default_factory=dict)  # union node -> variants that use it

    @property
    def output_nodes(self) -> set[str]:
        """Union nodes that hold some variant's final outputs."""
        return {view.names[node] for view in self.variants.values() for node, sockets in view.leaves.items() if sockets}

    def variant_outputs(self, variant: str, union_outputs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        """One item's outputs as ``variant`` alone returns them, read from the union run's outputs of that
        item (which must include every output of :attr:`output_nodes`)."""
        view = self.variants[variant]
        outputs: dict[str, dict[str, Any]] = {}
        for node, sockets in view.leaves.items():
            produced = union_outputs.get(view.names[node], {})
            values = {socket: produced[socket] for socket in sockets if socket in produced}
            if values:
                outputs[node] = values
        return outputs


def build_union(variants: dict[str, dict[str, Any]]) -> tuple[UnionGraph, dict[str, str]]:
    """The union of variants given as validated pipeline dicts (Haystack's schema), in their order, and
    the variants left out with the error that kept them from loading (an index that does not exist, say).

    A node keeps its own name in the union unless an earlier variant already used that name for a
    different fingerprint; then it becomes ``"<node>#2"``, ``"<node>#3"``, ...
    """
    failed: dict[str, str] = {}
    specs: dict[str, dict[str, Any]] = {}
    by_fingerprint: dict[str, str] = {}
    connections: set[tuple[str, str]] = set()
    views: dict[str, VariantNodes] = {}
    sharing: dict[str, list[str]] = {}
    inputs: list[str] = []
    for variant, data in variants.items():
        try:
            pipeline = Pipeline.from_dict(data, allowed_modules=["hopstack"])
            fingerprints = pipeline_fingerprints(pipeline)
        except Exception as exc:  # any failure here concerns this variant alone
            failed[variant] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, HopstackInputError) else str(exc)
            continue
        names: dict[str, str] = {}
        for node in nx.lexicographical_topological_sort(pipeline.graph):
            fingerprint = fingerprints[node]
            union_name = by_fingerprint.get(fingerprint)
            if union_name is None:
                union_name = node
                copies = 1
                while union_name in specs:
                    copies += 1
                    union_name = f"{node}#{copies}"
                by_fingerprint[fingerprint] = union_name
                specs[union_name] = data["components"][node]
            names[node] = union_name
            sharing.setdefault(union_name, []).append(variant)
        for connection in data.get("connections") or []:
            connections.add((_renamed(connection["sender"], names), _renamed(connection["receiver"], names)))
        leaves = {node: list(sockets) for node, sockets in pipeline.outputs().items()}
        views[variant] = VariantNodes(names, leaves, fingerprints)
        inputs.extend(name for name in pipeline_inputs(data.get("metadata")) if name not in inputs)
    union = {
        "metadata": {"hopstack": {"inputs": inputs}},
        "components": specs,
        "connections": [{"sender": s, "receiver": r} for s, r in sorted(connections)],
    }
    return UnionGraph(Pipeline.from_dict(union, allowed_modules=["hopstack"]), views, sharing), failed


def _renamed(endpoint: str, names: dict[str, str]) -> str:
    """A connection endpoint (``node`` or ``node.socket``) with the node renamed to its union name."""
    node, dot, socket = endpoint.partition(".")
    return f"{names[node]}{dot}{socket}"
