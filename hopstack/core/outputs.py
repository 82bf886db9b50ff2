"""What a pipeline returns for one question: the single definition that evaluation and the service share.

A pipeline's outputs for one question are what ``Pipeline.run`` (or the batched runner, per item) returns:
``{node: {socket: value}}`` for the sockets nothing consumes. From them:

- the answer is the first ``answers`` (a reader's GeneratedAnswer) or ``replies`` (a generator's strings or
  chat messages) output's first item;
- the documents are the first unconsumed ``documents`` output; in a pipeline that ends in a reader, the
  documents its answer was read from (CompSelect's clues, when the reader reads clues).

Metrics score exactly these documents and this answer, and ``/v1/answer`` returns them.

An answer is **supported** when the reader is confident enough (:data:`MIN_CONFIDENCE`, when it reports a
confidence) and one of its sources contains it: ``hopstack run``, ``/v1/answer`` and the serve page flag the
others with the reasons (:attr:`PipelineOutput.unsupported_because`).
"""

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from haystack import Document
from haystack.dataclasses import ChatMessage

from hopstack.core.text import normalize_answer, passage_text

ANSWER_SOCKETS = ("answers", "replies")
MIN_CONFIDENCE = 0.5
"""A reader confidence (the mean probability of its answer's tokens) below this makes the answer unsupported."""
YES_NO = ("yes", "no")

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


def supporting_ids(answer: str, documents: list[Document]) -> list[str]:
    """Ids of the documents whose normalised ``"title. text"`` (as a reader reads them) contains the normalised
    answer as whole words (none for an empty answer, or for yes and no, which are judgements, not spans)."""
    target = normalize_answer(answer)
    if not target or target in YES_NO:
        return []
    return [d.id for d in documents if f" {target} " in f" {normalize_answer(passage_text(d))} "]


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

    @property
    def sources(self) -> list[Document]:
        """The documents the answer rests on: those the reader read, else the documents returned."""
        return self.read or self.documents

    @property
    def unsupported_because(self) -> list[str]:
        """Why the answer is unsupported (empty when it is supported, or when there is no answer output): it
        is empty, the reader's confidence is below :data:`MIN_CONFIDENCE`, or no source contains it
        (:func:`supporting_ids`; a yes or no answer is judged by its confidence alone)."""
        if not self.has_answer:
            return []
        target = normalize_answer(self.text)
        if not target:
            return ["the answer is empty"]
        reasons = []
        if self.confidence is not None and self.confidence < MIN_CONFIDENCE:
            reasons.append(f"confidence {self.confidence:.2f} is below {MIN_CONFIDENCE:g}")
        if target not in YES_NO and not supporting_ids(self.text, self.sources):
            reasons.append("no source contains the answer")
        return reasons

    @property
    def supported(self) -> bool | None:
        """Whether the answer is supported (see :attr:`unsupported_because`); None without an answer output."""
        return not self.unsupported_because if self.has_answer else None


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
