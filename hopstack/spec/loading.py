"""Loading pipeline files: validate everything first, then build with Haystack's own loader."""

from pathlib import Path
from typing import Any

from haystack import Pipeline

from hopstack.spec.validate import (
    PipelineValidationError,
    init_parameter_names,
    resolve_component_class,
    validate_file,
)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set each override (e.g. ``index``) on every component whose ``__init__`` takes that parameter, in
    every mapping-valued init parameter that has that key (a scorer spec's ``llm``), and likewise inside
    nested component specs ``{"type", "init_parameters"}`` (the stopper of an iterative retriever)."""
    for spec in data.get("components", {}).values():
        _override_component(spec, {k: v for k, v in overrides.items() if v is not None})
    return data


def _override_component(spec: dict[str, Any], overrides: dict[str, Any]) -> None:
    accepted = init_parameter_names(resolve_component_class(spec["type"]))
    if spec.get("init_parameters") is None:
        spec["init_parameters"] = {}
    params = spec["init_parameters"]
    for key, value in overrides.items():
        if key in accepted:
            params[key] = value
        for name, nested in params.items():
            if isinstance(nested, dict) and key in nested and not _is_component_spec(nested):
                params[name] = {**nested, key: value}
    for nested in params.values():
        if _is_component_spec(nested):
            _override_component(nested, overrides)


def _is_component_spec(value: Any) -> bool:
    """A nested ``{"type": "module.Class", ...}`` (a scorer spec's type has no dots)."""
    return isinstance(value, dict) and isinstance(value.get("type"), str) and "." in value["type"]


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
