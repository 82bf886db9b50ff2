"""What a pipeline returns for one question: the single definition that evaluation and the service share.

A pipeline's outputs for one question are what ``Pipeline.run`` (or the batched runner, per item) returns:
``{node: {socket: value}}`` for the sockets nothing consumes. From them:

- the answer is the first ``answers`` (a reader's GeneratedAnswer) or ``replies`` (a generator's strings or
  chat messages) output's first item;
- the documents are the first unconsumed ``documents`` output; in a pipeline that ends in a reader, the
  documents its answer was read from (CompSelect's clues, when the reader reads clues).

Metrics score exactly these documents and this answer, and ``/v1/answer`` returns them.
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from haystack import Document
from haystack.dataclasses import ChatMessage

ANSWER_SOCKETS = ("answers", "replies")

Outputs = Mapping[str, Mapping[str, Any]]


def answer_text(item: Any) -> str:
    """The text of an answer item: a string, a chat message's text, or a GeneratedAnswer's (ExtractedAnswer's)
    ``.data``; "" for None."""
    if isinstance(item, str):
        return item
    if isinstance(item, ChatMessage):
        return item.text or ""
    return str(getattr(item, "data", None) or "")


def answer_item(outputs: Outputs) -> tuple[bool, Any]:
    """Whether the outputs hold an answer output (the first ``answers`` or ``replies`` output), and that
    output's first item (None when the output is empty)."""
    for sockets in outputs.values():
        for socket in ANSWER_SOCKETS:
            if socket in sockets:
                return True, next(iter(sockets[socket] or []), None)
    return False, None


@dataclass(frozen=True)
class PipelineOutput:
    """One question's result: ``documents`` (see the module docstring), whether the pipeline answers
    (``has_answer``), the answer item and its text, the documents the reader read, and the reader's confidence
    (``meta["confidence"]`` of a GeneratedAnswer, when it gives one)."""

    documents: list[Document]
    has_answer: bool = False
    answer: Any = None
    text: str = ""
    read: list[Document] = field(default_factory=list)
    confidence: float | None = None


def pipeline_output(outputs: Outputs) -> PipelineOutput:
    """The :class:`PipelineOutput` of one question's unconsumed outputs."""
    has_answer, item = answer_item(outputs)
    read = list(getattr(item, "documents", None) or [])
    documents = next((sockets["documents"] for sockets in outputs.values() if "documents" in sockets), read)
    return PipelineOutput(
        documents=list(documents),
        has_answer=has_answer,
        answer=item,
        text=answer_text(item),
        read=read,
        confidence=(getattr(item, "meta", None) or {}).get("confidence"),
    )


def unconsumed(outputs: Outputs, leaves: Mapping[str, Collection[str]]) -> dict[str, dict[str, Any]]:
    """``outputs`` cut to the sockets nothing consumes (``leaves``: node -> those sockets, as
    ``Pipeline.outputs()`` gives them), for callers that also asked for other nodes' outputs."""
    kept = {}
    for node, sockets in outputs.items():
        if node in leaves:
            kept[node] = {s: v for s, v in sockets.items() if s in leaves[node]}
    return kept


def final_documents(outputs: Outputs) -> list[Document]:
    """The documents a pipeline returns for one question (:func:`pipeline_output`)."""
    return pipeline_output(outputs).documents


def predicted_answer(outputs: Outputs) -> tuple[str, list[Document]] | None:
    """A pipeline's answer text to one question and the documents its reader read, or None when the pipeline
    has no answer output."""
    output = pipeline_output(outputs)
    return (output.text, output.read) if output.has_answer else None
