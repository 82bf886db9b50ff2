"""The batch contract shared by hopstack components.

A Haystack component exposes ``run(**inputs)`` for one question. A hopstack component may add
``run_batch(**inputs)`` that takes a list per input (same names as ``run``) and returns a list per
output, each as long as the batch. The batched runner calls ``run_batch`` once per node and per chunk
of questions; Haystack's own ``Pipeline.run`` keeps calling ``run``.

:class:`BatchComponent` makes this cheap to write: implement ``run_batch`` once and let ``run``
delegate to it with a batch of one, so that both paths share one implementation by construction.
"""

from typing import Any


class NestedComponents:
    """Mixin for components whose init parameters hold nested components as ``{"type", "init_parameters"}``
    (a retriever inside a multi-query retriever, the stages inside a hop loop).

    The component builds them itself with :func:`build_component`, under hopstack's allowlist; its
    ``from_dict`` keeps the specs as plain dicts instead of letting Haystack deserialize them, which
    would consult only Haystack's process-wide allowlist and refuse hopstack's own modules.
    """

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build the component from its serialised form, nested specs left as they are."""
        return cls(**(data.get("init_parameters") or {}))


def build_component(spec: Any, where: str) -> Any:
    """A nested component from ``{"type", "init_parameters"}``; ``where`` names it in errors."""
    from hopstack.spec.validate import resolve_component_class

    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"{where} must be a mapping with 'type' and optional 'init_parameters', got {spec!r}")
    unknown = set(spec) - {"type", "init_parameters"}
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {', '.join(sorted(unknown))}")
    return resolve_component_class(spec["type"])(**(spec.get("init_parameters") or {}))


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
        self._retriever = build_component(spec, "retriever")

    def content_identity(self) -> str | None:
        """What the wrapped retriever reads (its index), for node fingerprints."""
        identity = getattr(self._retriever, "content_identity", None)
        return identity() if callable(identity) else None
