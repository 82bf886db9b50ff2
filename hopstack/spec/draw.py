"""Drawing pipelines without any web service: Mermaid text, and SVG/PNG through matplotlib."""

from pathlib import Path

import networkx as nx
from haystack import Pipeline

from hopstack.spec.validate import type_label


def _node_id(name: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in name)


def _required_inputs(pipeline: Pipeline) -> dict[str, list[str]]:
    """The inputs a caller must feed (mandatory, unconnected sockets), each once by name, with the components
    it goes to: a flat input such as ``query`` reaches every unconnected socket of that name."""
    inputs: dict[str, list[str]] = {}
    for component, sockets in sorted(pipeline.inputs().items()):
        for socket, info in sockets.items():
            if info.get("is_mandatory") and not pipeline.graph.nodes[component]["input_sockets"][socket].senders:
                inputs.setdefault(socket, []).append(component)
    return dict(sorted(inputs.items()))


def to_mermaid(pipeline: Pipeline) -> str:
    """Mermaid flowchart text: the inputs a caller must feed (each once), components (name and class),
    connections with their sockets, and the outputs that no component consumes."""
    graph = pipeline.graph
    lines = ["flowchart LR"]
    for name in nx.lexicographical_topological_sort(graph):
        cls = type(graph.nodes[name]["instance"]).__name__
        lines.append(f'  {_node_id(name)}["{name}<br/><small>{cls}</small>"]')
    for socket, components in _required_inputs(pipeline).items():
        node = "in_" + _node_id(socket)
        lines.append(f'  {node}(["{socket}"])')
        lines.extend(f"  {node} --> {_node_id(component)}" for component in components)
    for sender, receiver, edge in sorted(graph.edges(data=True), key=lambda e: (e[0], e[1])):
        label = f"{edge['from_socket'].name} → {edge['to_socket'].name}"
        lines.append(f'  {_node_id(sender)} -- "{label}" --> {_node_id(receiver)}')
    for component, sockets in sorted(pipeline.outputs().items()):
        for socket, info in sorted(sockets.items()):
            node = _node_id(component)
            lines.append(f'  {node} --> out_{node}_{socket}(["{socket}: {type_label(info["type"])}"])')
    return "\n".join(lines) + "\n"


def draw_image(pipeline: Pipeline, path: str | Path, title: str | None = None) -> Path:
    """Draw the pipeline as a layered graph into ``path`` (``.svg`` or ``.png``) with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    if path.suffix.lower() not in (".svg", ".png"):
        raise ValueError(f"draw writes .svg or .png files, not {path.suffix or 'no extension'}")
    graph = nx.DiGraph()
    labels = {}
    for name in pipeline.graph.nodes:
        graph.add_node(name)
        labels[name] = f"{name}\n{type(pipeline.graph.nodes[name]['instance']).__name__}"
    for socket, components in _required_inputs(pipeline).items():
        key = f"in:{socket}"
        graph.add_edges_from((key, component) for component in components)
        labels[key] = f"input\n{socket}"
    for sender, receiver, edge in pipeline.graph.edges(data=True):
        graph.add_edge(sender, receiver, label=f"{edge['from_socket'].name}→{edge['to_socket'].name}")
    for component, sockets in pipeline.outputs().items():
        for socket in sockets:
            key = f"out:{component}.{socket}"
            graph.add_edge(component, key)
            labels[key] = f"output\n{socket}"
    for layer, nodes in enumerate(nx.topological_generations(graph)):
        for node in nodes:
            graph.nodes[node]["layer"] = layer
    # multipartite_layout keeps insertion order within a layer: order inputs and outputs by their component
    ordered = nx.DiGraph()
    ordered.add_nodes_from(sorted(graph.nodes(data=True), key=lambda nd: (nd[1]["layer"], str(nd[0]).split(":")[-1])))
    ordered.add_edges_from(graph.edges(data=True))
    graph = ordered
    positions = nx.multipartite_layout(graph, subset_key="layer", align="vertical")
    layers = max(nx.get_node_attributes(graph, "layer").values()) + 1
    figure, axes = plt.subplots(figsize=(max(6, 2.6 * layers), 4 + 0.4 * graph.number_of_nodes()))
    colours = [
        "#dbeafe" if n in pipeline.graph.nodes else ("#dcfce7" if str(n).startswith("in:") else "#fef3c7")
        for n in graph.nodes
    ]
    nx.draw_networkx_edges(graph, positions, ax=axes, arrows=True, arrowsize=18, node_size=5200)
    nx.draw_networkx_nodes(graph, positions, ax=axes, node_color=colours, node_size=5200, edgecolors="#334155")
    nx.draw_networkx_labels(graph, positions, labels=labels, ax=axes, font_size=8)
    nx.draw_networkx_edge_labels(
        graph, positions, edge_labels=nx.get_edge_attributes(graph, "label"), ax=axes, font_size=7
    )
    axes.set_title(title or "pipeline")
    axes.axis("off")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
