"""The batch contract shared by hopstack components.

A Haystack component exposes ``run(**inputs)`` for one question. A hopstack component may add
``run_batch(**inputs)`` that takes a list per input (same names as ``run``) and returns a list per
output, each as long as the batch. The batched runner calls ``run_batch`` once per node and per chunk
of questions; Haystack's own ``Pipeline.run`` keeps calling ``run``.

:class:`BatchComponent` makes this cheap to write: implement ``run_batch`` once and let ``run``
delegate to it with a batch of one, so that both paths share one implementation by construction.
"""

from typing import Any

from hopstack.core.roles import Batched


class BatchComponent:
    """Mixin for components whose natural implementation is batched.

    Subclasses define ``run_batch(**lists)`` and a typed ``run(...)`` (Haystack reads the sockets from
    ``run``'s signature) whose body is ``return self.run_single(arg=arg, ...)``.
    """

    def run_batch(self, **inputs: list[Any]) -> dict[str, list[Any]]:  # pragma: no cover - interface
        raise NotImplementedError(f"{type(self).__name__} must implement run_batch")

    def run_single(self, **inputs: Any) -> dict[str, Any]:
        """Run one item through ``run_batch`` and unwrap the one-element output lists."""
        outputs = self.run_batch(**{name: [value] for name, value in inputs.items()})
        return {name: values[0] for name, values in outputs.items()}


def batch_size_of(inputs: dict[str, list[Any]]) -> int:
    """The common length of a ``run_batch`` call's input lists; raises if they differ."""
    lengths = {name: len(values) for name, values in inputs.items()}
    distinct = set(lengths.values())
    if len(distinct) > 1:
        raise ValueError(f"run_batch inputs have different lengths: {lengths}")
    return distinct.pop() if distinct else 0


def call_batch(part: Any, **inputs: list[Any]) -> dict[str, list[Any]]:
    """A nested component's ``run_batch`` over the lists, or, for a plain Haystack component, its ``run``
    item by item (outputs gathered into lists)."""
    if isinstance(part, Batched):
        return part.run_batch(**inputs)
    outputs = [part.run(**dict(zip(inputs, values))) for values in zip(*inputs.values())]
    return {name: [o[name] for o in outputs] for name in (outputs[0] if outputs else {})}
