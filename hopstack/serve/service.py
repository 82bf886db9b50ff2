"""The pipelines a service holds, and turning one batched runner call into per-question responses.

A :class:`ServedPipeline` is one YAML file loaded once at start-up (never a pipeline a client sends): its
:class:`~hopstack.graphs.runner.BatchRunner`, its graph as Mermaid text and SVG, and the nodes whose outputs
a response shows:

- answer and documents: what :func:`hopstack.core.outputs.pipeline_output` reads from the pipeline's
  unconsumed outputs, exactly what evaluation scores: the first ``answers`` (or ``replies``) output, with the
  reader's confidence when it gives one and whether it is supported, and the unconsumed ``documents`` output
  or, in a pipeline that ends in a reader, the documents the reader read;
- clues: the documents output of the last clue selector (:class:`~hopstack.core.roles.ClueSelector`);
- sub-questions: every node with a ``sub_questions`` output (question decomposition);
- hops: the trace of every hop loop (:class:`~hopstack.core.roles.HopLoop`).

``/v1/retrieve`` returns the retrieval stage's documents: the unconsumed ``documents`` output or, in a
pipeline that ends in a reader, the documents given to the reader (followed back past clue selection); it
runs only the nodes those depend on (a reader pipeline's LLM never runs).
"""

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx

from hopstack.core.outputs import ANSWER_SOCKETS, pipeline_output, unconsumed
from hopstack.core.roles import ClueSelector, HopLoop
from hopstack.datasets.benchmark import sample_question
from hopstack.errors import HopstackInputError
from hopstack.graphs.runner import BatchRunner, RunResult
from hopstack.graphs.tracing import jsonable
from hopstack.spec.draw import draw_image, to_mermaid
from hopstack.spec.loading import load_pipeline

RETURNABLE = ("documents", "clues", "answer", "trace")


@dataclass(frozen=True)
class Query:
    """One question of a batch: ``top_k`` documents to return (None: the pipeline's own number) and what
    to return (a subset of :data:`RETURNABLE`)."""

    question: str
    top_k: int | None = None
    returns: frozenset[str] = frozenset({"documents", "answer"})


class ServedPipeline:
    """One pipeline file, loaded and planned for serving; ``name`` is what clients ask for, ``overrides`` set
    init parameters by name as ``hopstack run --index`` does (e.g. ``{"index": "corpus.jsonl"}``). ``name``,
    ``file``, ``overrides`` and ``batch_size`` are kept, so that a Ray Serve replica can load it again."""

    def __init__(
        self, name: str, file: str | Path, overrides: dict[str, Any] | None = None, batch_size: int | None = None
    ):
        self.name = name
        self.file = Path(file)
        self.overrides = overrides
        self.batch_size = batch_size
        self.pipeline = load_pipeline(self.file, overrides)
        self.runner = BatchRunner(self.pipeline, batch_size=batch_size)
        settings = (self.pipeline.metadata or {}).get("hopstack") or {}
        self.description = str(settings.get("description") or "")
        self.mermaid = to_mermaid(self.pipeline)
        self._svg: str | None = None
        graph = self.pipeline.graph
        self._order = list(nx.lexicographical_topological_sort(graph))
        self._leaves = self.pipeline.outputs()
        self.answer_node = self._first_leaf(ANSWER_SOCKETS)
        output_documents = self._first_leaf(("documents",))
        self.documents_node = output_documents or self._reader_documents_node()
        clue_nodes = [n for n in self._order if self._is_clue_selector(n) and "documents" in self._outputs(n)]
        self.clue_node = clue_nodes[-1] if clue_nodes else None
        self.sub_question_nodes = [n for n in self._order if "sub_questions" in self._outputs(n)]
        self.hop_nodes = [n for n in self._order if isinstance(self._instance(n), HopLoop)]
        self._top_k_socket = self.documents_node is not None and self._free_socket(self.documents_node, "top_k")
        self._documents_are_output = output_documents is not None
        indexes = [getattr(self._instance(n), "index", None) for n in self._order]
        self.sample_question = sample_question(
            (overrides or {}).get("index") or next((i for i in indexes if isinstance(i, str)), None)
        )

    # -- planning -----------------------------------------------------------------------------
    def _instance(self, name: str) -> Any:
        return self.pipeline.graph.nodes[name]["instance"]

    def _outputs(self, name: str) -> dict[str, Any]:
        return self.pipeline.graph.nodes[name]["output_sockets"]

    def _is_clue_selector(self, name: str) -> bool:
        return isinstance(self._instance(name), ClueSelector)

    def _free_socket(self, name: str, socket: str) -> bool:
        sockets = self.pipeline.graph.nodes[name]["input_sockets"]
        return socket in sockets and not sockets[socket].senders

    def _first_leaf(self, sockets: tuple[str, ...]) -> str | None:
        for name, outputs in self._leaves.items():
            if any(s in outputs for s in sockets):
                return name
        return None

    def _reader_documents_node(self) -> str | None:
        """For a pipeline whose output is no documents: the node that feeds the reader its documents,
        followed up past clue selection to the documents the clues were taken from."""
        if self.answer_node is None:
            return None
        node = self._sender(self.answer_node, "documents")
        while node is not None and self._is_clue_selector(node):
            node = self._sender(node, "documents") or None
        return node

    def _sender(self, name: str, socket: str) -> str | None:
        senders = self.pipeline.graph.nodes[name]["input_sockets"].get(socket)
        return senders.senders[0] if senders is not None and senders.senders else None

    # -- drawing ------------------------------------------------------------------------------
    def svg(self) -> str:
        """The graph drawn as SVG (drawn once, on first use)."""
        if self._svg is None:
            import tempfile

            with tempfile.TemporaryDirectory() as folder:
                path = draw_image(self.pipeline, Path(folder) / "graph.svg", title=self.name)
                self._svg = path.read_text(encoding="utf-8")
        return self._svg

    def describe(self) -> dict[str, Any]:
        """Name, file name, description, a sample question of its index's dataset (None when its corpus is in
        no dataset), graph (Mermaid), and what its responses can hold."""
        return {
            "name": self.name,
            "file": self.file.name,
            "description": self.description,
            "sample_question": self.sample_question,
            "mermaid": self.mermaid,
            "answers": self.answer_node is not None,
            "retrieves": self.documents_node is not None,
            "clues": self.clue_node is not None,
            "nodes": [{"name": n, "type": type(self._instance(n)).__name__} for n in self._order],
        }

    # -- running ------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Load every model and open every index."""
        self.runner.warm_up()

    def answer(self, queries: list[Query]) -> list[dict[str, Any]]:
        """Run the whole pipeline for a batch of questions; one response body per question."""
        return self._respond(queries, targets=None)

    def retrieve(self, queries: list[Query]) -> list[dict[str, Any]]:
        """Run the pipeline up to its documents for a batch; one response body per question."""
        if self.documents_node is None:
            raise HopstackInputError(f"pipeline '{self.name}' returns no documents to retrieve")
        return self._respond(queries, targets=[self.documents_node, *self.sub_question_nodes, *self.hop_nodes])

    def _respond(self, queries: list[Query], targets: list[str] | None) -> list[dict[str, Any]]:
        shown = [n for n in (self.documents_node, self.clue_node, *self.sub_question_nodes, *self.hop_nodes) if n]
        started = time.perf_counter()
        result = self.runner.run(
            [self._inputs(q, final=targets is not None or self._documents_are_output) for q in queries],
            trace=any("trace" in q.returns for q in queries),
            include_outputs_from=shown,
            targets=targets,
        )
        total_ms = (time.perf_counter() - started) * 1000
        return [self._body(q, i, result, total_ms, answering=targets is None) for i, q in enumerate(queries)]

    def _inputs(self, query: Query, final: bool) -> dict[str, Any]:
        """The runner's inputs for one question. ``top_k`` goes to the documents node's ``top_k`` input only
        when that node's documents are what the run returns (``final``); a reader pipeline's documents are
        cut afterwards instead, so that ``top_k`` never changes what its reader reads."""
        nested = self.runner.distribute(self.runner.question_input(query.question))
        if query.top_k is not None and self._top_k_socket and final:
            nested.setdefault(self.documents_node, {})["top_k"] = query.top_k
        return nested

    def _body(self, query: Query, i: int, result: RunResult, total_ms: float, answering: bool) -> dict[str, Any]:
        outputs = result.outputs[i]
        body: dict[str, Any] = {"pipeline": self.name, "question": query.question}
        if "documents" in query.returns:
            if answering:
                documents = pipeline_output(unconsumed(outputs, self._leaves)).documents
            else:
                documents = outputs.get(self.documents_node, {}).get("documents", [])
            body["documents"] = jsonable(documents[: query.top_k] if query.top_k else documents)
        if "clues" in query.returns and answering:
            body["clues"] = jsonable(outputs[self.clue_node].get("documents", [])) if self.clue_node else None
        if "answer" in query.returns and answering:
            body["answer"] = self._answer(outputs)
        if "trace" in query.returns:
            body["trace"] = {
                "sub_questions": {n: outputs.get(n, {}).get("sub_questions") for n in self.sub_question_nodes},
                "hops": {n: jsonable(outputs.get(n, {}).get("trace")) for n in self.hop_nodes},
                "nodes": jsonable(result.traces[i]),
            }
        body["timings"] = {
            "batch_ms": total_ms,
            "batch_size": len(result.outputs),
            "stages": [
                {"node": name, "type": stats.type, "ms": stats.wall_s * 1000, "batched": stats.batched}
                for name, stats in result.stats.items()
                if stats.calls
            ],
        }
        return body

    def _answer(self, outputs: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        if self.answer_node is None:
            return None
        output = pipeline_output(unconsumed(outputs, self._leaves))
        return {
            "text": output.text,
            "confidence": output.confidence,
            "documents": [d.id for d in output.read],
            "supported": output.supported,
            "unsupported_because": output.unsupported_because,
        }
