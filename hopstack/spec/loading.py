"""Loading pipeline files: validate everything first, then build with Haystack's own loader."""

from pathlib import Path
from typing import Any

from haystack import Pipeline

from hopstack.core.spec import apply_overrides
from hopstack.spec.validate import PipelineValidationError, validate_file


def load_pipeline_data(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a pipeline file and return its data with ``overrides`` applied (:func:`apply_overrides`);
    raises :class:`PipelineValidationError` listing every problem."""
    data, problems = validate_file(path)
    if problems:
        raise PipelineValidationError(problems)
    return apply_overrides(data, overrides or {})


def load_pipeline(path: str | Path, overrides: dict[str, Any] | None = None) -> Pipeline:
    """Validate ``path`` and load it with ``haystack.Pipeline.from_dict`` allowlisted to hopstack and haystack
    modules. ``overrides`` sets init parameters by name on every component and nested spec that takes them,
    e.g. ``{"index": "corpus.jsonl"}`` points every retriever at one corpus."""
    return Pipeline.from_dict(load_pipeline_data(path, overrides), allowed_modules=["hopstack"])
