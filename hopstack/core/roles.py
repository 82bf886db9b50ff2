"""The roles a component can play, as runtime-checkable Protocols.

The runner, the metrics and the service ask ``isinstance(component, Role)`` instead of naming concrete
classes or modules, so a user's own component plays a role by offering its members. Roles whose ``run``
signatures alone would not tell them apart carry a marker class attribute (``True``) named after the role:
a component declares, for instance, ``selects_clues = True`` to be a :class:`ClueSelector`.
"""

from collections.abc import Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from haystack import Document


@runtime_checkable
class Batched(Protocol):
    """Runs a whole batch in one call: ``run_batch(**lists) -> {output: list}``, each list as long as the batch
    and equal, item by item, to what ``run`` gives."""

    def run_batch(self, **inputs: list[Any]) -> dict[str, list[Any]]: ...


@runtime_checkable
class ReadsContent(Protocol):
    """Reads something besides its inputs (an index): ``content_identity()`` names it, for node fingerprints,
    so that a node over another index, or a rebuilt one, is not served from the node cache."""

    def content_identity(self) -> str | None: ...


@runtime_checkable
class Retriever(Protocol):
    """Finds documents for a query: ``run(query, top_k) -> {documents}``."""

    retrieves: ClassVar[bool]

    def run(self, query: str, top_k: int | None = None) -> dict[str, Any]: ...


@runtime_checkable
class Reranker(Protocol):
    """Reorders a question's candidates: ``run(query, documents, top_k) -> {documents}``."""

    reranks: ClassVar[bool]

    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, Any]: ...


@runtime_checkable
class ClueSelector(Protocol):
    """Turns documents into clues, the sentences a reader reads (CompSelect): its ``documents`` output
    holds clues, not retrieved documents."""

    selects_clues: ClassVar[bool]


@runtime_checkable
class Stopper(Protocol):
    """Decides per question whether the evidence suffices: ``run(query, documents, hop) -> {stop, trace}``."""

    stops_hops: ClassVar[bool]

    def run(self, query: str, documents: list[Document], hop: int = 1) -> dict[str, Any]: ...


@runtime_checkable
class Reformulator(Protocol):
    """Writes the next hop's query: ``run(question, documents, hop) -> {query}``."""

    reformulates: ClassVar[bool]


@runtime_checkable
class HopLoop(Protocol):
    """Retrieves over several hops inside one component (retriever, reformulator, stopper nested); its
    ``trace`` output tells, per question, what each hop did."""

    loops_hops: ClassVar[bool]


@runtime_checkable
class Reader(Protocol):
    """Answers questions from documents: ``answer(questions, documents) -> [GeneratedAnswer]``."""

    def answer(self, questions: Sequence[str], documents: Sequence[Sequence[Document]]) -> list[Any]: ...


@runtime_checkable
class Scorer(Protocol):
    """Scores (query, passage) pairs, higher meaning more relevant: ``score(pairs) -> one float per pair``."""

    def warm_up(self) -> None: ...

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray: ...


@runtime_checkable
class LLM(Protocol):
    """A language model backend. A prompt is a string or a list of chat messages ``{"role", "content"}``.

    ``generate`` returns one completion per prompt; ``score`` the log-probability of each candidate
    continuation per prompt; ``generate_scored`` each prompt's greedy completion with the log-probability of
    every token it chose."""

    def warm_up(self) -> None: ...

    def generate(
        self,
        prompts: Sequence[Any],
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        seed: int = 0,
    ) -> list[str]: ...

    def score(self, prompts: Sequence[Any], candidates: Sequence[str]) -> list[list[float]]: ...

    def generate_scored(self, prompts: Sequence[Any], max_tokens: int = 32) -> list[tuple[str, list[float]]]: ...
