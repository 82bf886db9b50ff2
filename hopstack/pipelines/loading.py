"""Loading pipeline files: validate everything first, then build with Haystack's own loader."""

from pathlib import Path
from typing import Any

from haystack import Pipeline

from hopstack.pipelines.validate import (
    PipelineValidationError,
    init_parameter_names,
    resolve_component_class,
    validate_file,
)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set each override (e.g. ``index``) on every component whose ``__init__`` takes that parameter."""
    for spec in data.get("components", {}).values():
        accepted = init_parameter_names(resolve_component_class(spec["type"]))
        for key, value in overrides.items():
            if key in accepted and value is not None:
                spec.setdefault("init_parameters", {})
                if spec["init_parameters"] is None:
                    spec["init_parameters"] = {}
                spec["init_parameters"][key] = value
    return data


def load_pipeline_data(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a pipeline file and return its data with ``overrides`` applied; raises on any problem."""
    data, problems = validate_file(path)
    if problems:
        raise PipelineValidationError(problems)
    return apply_overrides(data, overrides or {})


def load_pipeline(path: str | Path, overrides: dict[str, Any] | None = None) -> Pipeline:
    """Validate ``path`` (raising :class:`PipelineValidationError` with every problem) and load it with
    ``haystack.Pipeline.from_dict`` allowlisted to hopstack and haystack modules.

    ``overrides`` sets init parameters by name on every component that accepts them, e.g.
    ``{"index": "corpus.jsonl"}`` points every retriever at one corpus.
    """
    return Pipeline.from_dict(load_pipeline_data(path, overrides), allowed_modules=["hopstack"])
