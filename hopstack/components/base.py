"""The nested-retriever mixin shared by multi-query retrieval and the hop loop."""

from typing import Any

from hopstack.core.roles import ReadsContent
from hopstack.core.spec import NestedComponents, build


class WrapsRetriever(NestedComponents):
    """Mixin for components built around a nested retriever (multi-query retrieval, the hop loop): it is
    built with the component's ``index`` (so ``--index`` reaches it), and its index is the component's
    content identity for node fingerprints."""

    def use_retriever(self, retriever: dict[str, Any], index: str | None) -> None:
        """Record the retriever spec and index (init parameters) and build the retriever."""
        self.retriever = retriever
        self.index = index
        spec = retriever
        if index is not None and isinstance(retriever, dict):
            spec = {**retriever, "init_parameters": {**(retriever.get("init_parameters") or {}), "index": index}}
        self._retriever = build(spec, "retriever")

    def content_identity(self) -> str | None:
        """What the wrapped retriever reads (its index), for node fingerprints."""
        return self._retriever.content_identity() if isinstance(self._retriever, ReadsContent) else None
