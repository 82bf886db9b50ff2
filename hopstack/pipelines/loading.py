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
    """Set each override (e.g. ``index``) on every component whose ``__init__`` takes that parameter, and
    in every mapping-valued init parameter that has that key (a scorer spec's ``llm``)."""
    for spec in data.get("components", {}).values():
        accepted = init_parameter_names(resolve_component_class(spec["type"]))
        if spec.get("init_parameters") is None:
            spec["init_parameters"] = {}
        params = spec["init_parameters"]
        for key, value in overrides.items():
            if value is None:
                continue
            if key in accepted:
                params[key] = value
            for name, nested in params.items():
                if isinstance(nested, dict) and key in nested:
                    params[name] = {**nested, key: value}
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
