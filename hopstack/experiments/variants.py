"""Pipeline variants for ``hopstack compare``: pipeline files, optionally swept over a parameter grid.

A grid file lists pipeline files to compare and/or init-parameter values per ``component.parameter``;
every pipeline that has the component is expanded into the full Cartesian product of the values (no
greedy pruning)::

    # grid.yaml
    pipelines: [../yaml/hybrid.yaml]      # optional; relative to this file; added to those on the command line
    parameters:
      fuse.method: [rrf, zscore]
      fuse.weights: [[0.5, 0.5], [0.7, 0.3]]

Each variant is validated like a pipeline file; one that fails is kept with its error, so the others
still run.
"""

import copy
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hopstack.errors import HopstackInputError
from hopstack.spec.loading import load_pipeline_data
from hopstack.spec.validate import MAX_FILE_CHARACTERS, PipelineValidationError, load_yaml, validate_text

GRID_KEYS = ("pipelines", "parameters")


@dataclass
class Grid:
    """Parameter values to sweep: ``parameters`` maps ``component.parameter`` to its values."""

    path: Path
    parameters: dict[str, list[Any]]
    pipelines: list[Path] = field(default_factory=list)


@dataclass
class Variant:
    """One pipeline to compare: its name, file, swept parameter values, and its validated pipeline dict
    (``data``), or the ``error`` that kept it from loading."""

    name: str
    pipeline: Path
    params: dict[str, Any]
    data: dict[str, Any] | None = None
    error: str | None = None


def read_grid(path: str | Path) -> Grid:
    """Read and check a grid file; problems name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise HopstackInputError(f"grid file {str(path)!r} does not exist")
    try:
        with path.open(encoding="utf-8") as file:
            text = file.read(MAX_FILE_CHARACTERS + 1)
    except (OSError, UnicodeDecodeError) as exc:
        raise HopstackInputError(f"{path}: cannot read the file: {exc}") from exc
    if len(text) > MAX_FILE_CHARACTERS:
        raise HopstackInputError(f"{path}: over {MAX_FILE_CHARACTERS:,} characters; grid files are read up to that")
    try:
        _, data = load_yaml(text)  # as pipeline files: no aliases, bounded nesting, no duplicate keys
    except yaml.YAMLError as exc:
        raise HopstackInputError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not (data.get("parameters") or data.get("pipelines")):
        raise HopstackInputError(
            f"{path}: a grid file needs 'pipelines' (a list of files) and/or 'parameters' "
            "(a mapping of component.parameter: [values])"
        )
    unknown = sorted(str(key) for key in data if key not in GRID_KEYS)
    if unknown:
        raise HopstackInputError(f"{path}: unknown key(s) {', '.join(unknown)}; a grid file has {', '.join(GRID_KEYS)}")
    if not isinstance(data.get("parameters") or {}, dict):
        raise HopstackInputError(f"{path}: 'parameters' must be a mapping of component.parameter: [values]")
    parameters: dict[str, list[Any]] = {}
    for key, values in (data.get("parameters") or {}).items():
        component, dot, parameter = str(key).partition(".")
        if not dot or not component or not parameter:
            raise HopstackInputError(f"{path}: parameters.{key}: write keys as component.parameter (e.g. fuse.top_k)")
        if not isinstance(values, list) or not values:
            raise HopstackInputError(f"{path}: parameters.{key}: give a non-empty list of values")
        parameters[str(key)] = values
    pipelines = data.get("pipelines") or []
    if not isinstance(pipelines, list):
        raise HopstackInputError(f"{path}: 'pipelines' must be a list of pipeline files")
    files: dict[Path, int] = {}
    for number, entry in enumerate(pipelines, start=1):
        file = (path.parent / str(entry)).resolve()
        if file in files:
            raise HopstackInputError(f"{path}: pipelines lists {entry} twice (entries {files[file]} and {number})")
        files[file] = number
    return Grid(path, parameters, list(files))


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def variant_name(pipeline: Path, params: dict[str, Any]) -> str:
    """``stem`` or ``stem[component.parameter=value,...]``."""
    if not params:
        return pipeline.stem
    return f"{pipeline.stem}[{','.join(f'{k}={_value_text(v)}' for k, v in params.items())}]"


def expand_variants(
    files: list[Path], grid: Grid | None = None, overrides: dict[str, Any] | None = None
) -> list[Variant]:
    """Every variant of every pipeline file (and of the grid's own pipelines), in order.

    ``overrides`` are set on every component that accepts them (``{"index": DIR}``), before the grid's
    values. A grid key whose component no pipeline has is an error; a file or a grid point that does
    not validate becomes a variant with its ``error`` set.
    """
    files = list(files) + (grid.pipelines if grid else [])
    if not files:
        where = f"; {grid.path} lists none" if grid else ""
        raise HopstackInputError(f"no pipelines to compare: give pipeline files or a grid file with 'pipelines'{where}")
    variants: list[Variant] = []
    used_keys: set[str] = set()
    for file in files:
        try:
            data = load_pipeline_data(file, overrides)
        except HopstackInputError as exc:
            variants.append(Variant(Path(file).stem, Path(file), {}, error=str(exc)))
            continue
        swept = {k: v for k, v in (grid.parameters if grid else {}).items() if k.split(".", 1)[0] in data["components"]}
        used_keys.update(swept)
        for values in itertools.product(*swept.values()):
            params = dict(zip(swept, values))
            variants.append(_grid_point(Path(file), data, params))
    if grid:
        unused = sorted(set(grid.parameters) - used_keys)
        if unused:
            raise HopstackInputError(
                f"{grid.path}: no pipeline has the component of {', '.join(unused)}; "
                f"pipelines: {', '.join(str(f) for f in files)}"
            )
    _make_names_unique(variants)
    return variants


def _grid_point(file: Path, data: dict[str, Any], params: dict[str, Any]) -> Variant:
    """The variant of ``data`` with ``params`` set, validated as a pipeline file would be."""
    name = variant_name(file, params)
    if not params:
        return Variant(name, file, params, data=data)
    point = copy.deepcopy(data)
    for key, value in params.items():
        component, parameter = key.split(".", 1)
        spec = point["components"][component]
        spec["init_parameters"] = {**(spec.get("init_parameters") or {}), parameter: value}
    validated, problems = validate_text(yaml.safe_dump(point, sort_keys=False), source=f"{file} {name}")
    if problems:
        return Variant(name, file, params, error=str(PipelineValidationError(problems)))
    return Variant(name, file, params, data=validated)


def _make_names_unique(variants: list[Variant]) -> None:
    seen: dict[str, int] = {}
    for variant in variants:
        count = seen[variant.name] = seen.get(variant.name, 0) + 1
        if count > 1:
            variant.name = f"{variant.name}#{count}"
