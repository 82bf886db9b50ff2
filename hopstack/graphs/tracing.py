"""Turning node outputs into JSON for output files and traces."""

from typing import Any

from haystack import Document

_PLAIN = (str, int, float, bool, type(None))


def jsonable(value: Any) -> Any:
    """A JSON-safe copy of a node output: Documents become ``{id, content, meta, score}``."""
    if isinstance(value, _PLAIN):  # the common case first: the service converts every response this way
        return value
    if isinstance(value, Document):
        # most metadata is flat, with string keys: copied, not walked
        flat = all(isinstance(k, str) and isinstance(v, _PLAIN) for k, v in value.meta.items())
        meta = dict(value.meta) if flat else jsonable(value.meta)
        return {"id": value.id, "content": value.content, "meta": meta, "score": value.score}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if hasattr(value, "tolist"):
        return value.tolist()
    return repr(value)
