"""Pipeline-file contracts shared by every layer: the module allowlist, resolving a ``type`` to a class, the
one nested-spec form ``{type, init_parameters}``, the pipeline's inputs, and overrides.

A nested part of a component (the retriever of a hop loop, a reranker's scorer, a truncator's reader, a
stopper's prover, an LLM) is written exactly like a top-level component::

    scorer:
      type: cross-encoder                  # a registered short name, or a class path under the allowlist
      init_parameters: {model: BAAI/bge-reranker-base}

An LLM may also be given as a bare model name (``llm: qwen2.5-0.5b``), short for
``{type: llama.cpp, init_parameters: {model: qwen2.5-0.5b}}`` (see :mod:`hopstack.models.llm`).
"""

import collections.abc
import functools
import importlib
import inspect
import math
import re
import types
import typing
from collections.abc import Iterator
from typing import Any

from hopstack.core.text import did_you_mean, short_repr

ALLOWED_MODULES = ("hopstack.components", "hopstack.models", "haystack")
"""Packages whose classes a pipeline file may name (never a ``__main__`` module, never the command line)."""

MAX_TYPE_LENGTH = 200
"""The longest ``type`` read (class paths are far shorter; a longer one is refused before any import)."""

DEFAULT_PIPELINE_INPUTS = ("query", "question")
"""Unconnected sockets with these names receive the question when ``metadata.hopstack.inputs`` is unset."""


def pipeline_inputs(metadata: Any) -> tuple[str, ...]:
    """Names of the flat pipeline inputs: ``metadata.hopstack.inputs`` when it is a list of names, else
    :data:`DEFAULT_PIPELINE_INPUTS` (validation reports malformed metadata)."""
    settings = metadata.get("hopstack") if isinstance(metadata, dict) else None
    inputs = settings.get("inputs") if isinstance(settings, dict) else None
    if isinstance(inputs, list) and inputs and all(isinstance(name, str) for name in inputs):
        return tuple(inputs)
    return DEFAULT_PIPELINE_INPUTS


SPEC_KEYS = frozenset({"type", "init_parameters"})

SHORT_NAMES: dict[str, str | type] = {
    # scorers of (query, passage) pairs
    "cross-encoder": "hopstack.models.cross_encoder.CrossEncoderScorer",
    "bi-encoder": "hopstack.models.scorers.BiEncoderScorer",
    "llm": "hopstack.models.scorers.LLMScorer",
    "llm-graded": "hopstack.models.scorers.LLMGradedScorer",
    "extractive-qa": "hopstack.models.extractive_qa.ExtractiveQAScorer",
    # LLM backends
    "llama.cpp": "hopstack.models.llm.LlamaCppLLM",
    "transformers": "hopstack.models.llm.TransformersLLM",
    "openai": "hopstack.models.llm.OpenAICompatibleLLM",
    # nested stages
    "reader": "hopstack.components.generation.AnswerGenerator",
    "decomposer": "hopstack.components.decomposition.QuestionDecomposer",
    "natural-logic": "hopstack.components.stopping.NaturalLogicProver",
}
"""Registered short names a nested spec's ``type`` may use instead of a class path: a class path, or a class
that Python code registered with :func:`register` (pipeline files themselves can only name allowlisted
modules)."""


def register(short_name: str, cls: type | str) -> None:
    """Let nested specs name ``cls`` (a class, or a class path under the allowlist) as ``short_name``, e.g. a
    scorer of one's own: ``register("my-scorer", MyScorer)`` before loading the pipeline."""
    SHORT_NAMES[short_name] = cls


class SpecError(ValueError):
    """A nested spec is malformed or names a class it may not. ``where`` names the spec (its init parameter,
    e.g. ``"scorer"``), ``path`` the key path inside it (e.g. ``("init_parameters", "llm")``) where the problem
    lies."""

    def __init__(self, message: str, where: str, path: tuple[str, ...] = ()):
        super().__init__(message)
        self.where = where
        self.path = path


def module_allowed(module_name: str) -> bool:
    """Whether ``module_name`` lies under one of :data:`ALLOWED_MODULES` and is no ``__main__`` module."""
    if "__main__" in module_name.split("."):
        return False
    return any(module_name == top or module_name.startswith(top + ".") for top in ALLOWED_MODULES)


def _import_class(class_path: str, kind: str = "type") -> type:
    if len(class_path) > MAX_TYPE_LENGTH:
        raise ValueError(f"{kind} is {len(class_path)} characters long; at most {MAX_TYPE_LENGTH} are read")
    module_name, _, class_name = class_path.rpartition(".")
    if not module_name or not class_name:
        raise ValueError(
            f"type must be a class path such as 'hopstack.components.retrieval.BM25Retriever' or a registered "
            f"short name ({', '.join(SHORT_NAMES)}), got {short_repr(class_path)}"
        )
    if not module_allowed(module_name):
        raise PermissionError(
            f"module '{module_name}' is outside the allowlist ({', '.join(ALLOWED_MODULES)}); it was not imported"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"unknown {kind} '{class_path}': module not found ({exc})") from exc
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ValueError(f"unknown {kind} '{class_path}': {module_name} has no class {class_name}")
    return cls


def resolve_component_class(component_type: Any) -> type:
    """The Haystack component class a pipeline file's top-level ``type`` names (a class path under the
    allowlist); raises PermissionError outside the allowlist, ValueError when unknown."""
    from haystack import component as haystack_component

    if not isinstance(component_type, str) or "." not in component_type:
        raise ValueError(
            "type must be a qualified class name such as 'hopstack.components.retrieval.BM25Retriever', "
            f"got {short_repr(component_type)}"
        )
    if component_type not in haystack_component.registry:
        _import_class(component_type, kind="component type")
    if component_type not in haystack_component.registry:
        raise ValueError(f"unknown component type '{component_type}': not a Haystack component")
    return haystack_component.registry[component_type]


def resolve_nested_class(type_name: Any) -> type:
    """The class a nested spec's ``type`` names: a registered short name or a class path under the allowlist."""
    names = ", ".join(SHORT_NAMES)
    if not isinstance(type_name, str) or not type_name:
        raise ValueError(f"type must be a short name ({names}) or a class path, got {short_repr(type_name)}")
    if type_name not in SHORT_NAMES and "." not in type_name:
        hint = did_you_mean(type_name, list(SHORT_NAMES))
        raise ValueError(
            f"unknown type {short_repr(type_name)}: use a registered short name ({names}) or a class path{hint}"
        )
    target = SHORT_NAMES.get(type_name, type_name)
    return target if isinstance(target, type) else _import_class(target)


def init_signature(cls: type) -> tuple[dict[str, inspect.Parameter], bool]:
    """A class's named ``__init__`` parameters and whether it also takes ``**kwargs``."""
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    takes_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {
        n: p
        for n, p in params.items()
        if p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    }
    return named, takes_kwargs


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve is not checked
        return {}


def _matches(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a parameter's annotation (plain types, unions, Literal, lists, dicts; finite
    numbers only; anything else is not checked here but by the constructor)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or isinstance(hint, typing.TypeVar):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if hint is type(None):
        return value is None
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and _finite(value)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, collections.abc.Sequence):
        return isinstance(value, list) and (not args or all(_matches(v, args[0]) for v in value))
    if origin in (dict, collections.abc.Mapping):
        return isinstance(value, dict) and (not args or all(_matches(v, args[1]) for v in value.values()))
    if hint in (list, dict):
        return isinstance(value, hint)
    return True


def _finite(number: int | float) -> bool:
    """Whether ``number`` is a finite float or an int that a float holds."""
    try:
        return math.isfinite(number)
    except OverflowError:  # an int too large for a float
        return False


def _hint_name(hint: Any) -> str:
    return re.sub(r"\b(?:typing|collections\.abc|builtins)\.", "", getattr(hint, "__name__", None) or str(hint))


def type_problem(cls: type, name: str, value: Any) -> str | None:
    """Why ``value`` does not fit ``cls``'s init parameter ``name`` as annotated, or None when it does."""
    hint = _type_hints(cls).get(name)
    if hint is None or _matches(value, hint):
        return None
    return f"init parameter '{name}' of {cls.__name__} must be {_hint_name(hint)}, got {short_repr(value)}"


def parameter_problems(cls: type, params: dict[str, Any]) -> Iterator[tuple[str | None, str, str]]:
    """Every problem of ``params`` as ``cls``'s init parameters, as ``(key, at, message)``: an unknown name
    (``at`` "key", with the nearest names), a value that does not fit the annotation (``at`` "value"), a
    missing required parameter (key None). Nested specs among the values are not looked into."""
    named, takes_kwargs = init_signature(cls)
    for key, value in params.items():
        if not takes_kwargs and key not in named:
            yield str(key), "key", f"unknown init parameter '{key}' for {cls.__name__}{did_you_mean(str(key), named)}"
        elif not is_spec(value) and (problem := type_problem(cls, str(key), value)):
            yield str(key), "value", problem
    for name, param in named.items():
        if param.default is inspect.Parameter.empty and name not in params:
            yield None, "key", f"missing required init parameter '{name}' for {cls.__name__}"


def init_parameter_names(cls: type) -> set[str]:
    """The keyword parameters of a class's ``__init__``."""
    return set(init_signature(cls)[0])


def is_spec(value: Any) -> bool:
    """Whether ``value`` is written as a nested spec: a mapping with a ``type`` (well formed or not)."""
    return isinstance(value, dict) and "type" in value


def check_spec(spec: Any, where: str) -> tuple[type, dict[str, Any]]:
    """The class and init parameters of a nested spec ``{type, init_parameters}``; raises :class:`SpecError`
    (naming ``where`` and the key at fault) for a malformed spec, a type outside the allowlist or unknown,
    or init parameters the class does not take or lacks."""
    if not isinstance(spec, dict) or "type" not in spec:
        raise SpecError(f"{where} must be a mapping {{type, init_parameters}}, got {short_repr(spec)}", where)
    extra = [str(k) for k in spec if k not in SPEC_KEYS]
    if extra:
        raise SpecError(
            f"{where} has key(s) {', '.join(extra)} beside 'type': a nested spec is {{type, init_parameters}}; "
            f"move them under init_parameters",
            where,
            (extra[0],),
        )
    try:
        cls = resolve_nested_class(spec["type"])
    except (ValueError, PermissionError) as exc:
        raise SpecError(f"{where}: {exc}", where, ("type",)) from exc
    params = spec.get("init_parameters")
    params = {} if params is None else params
    if not isinstance(params, dict):
        raise SpecError(f"{where}: init_parameters must be a mapping", where, ("init_parameters",))
    for key, _, problem in parameter_problems(cls, params):
        raise SpecError(f"{where}: {problem}", where, ("init_parameters", key) if key else ("type",))
    return cls, params


def build(spec: Any, where: str, role: type | None = None, defaults: dict[str, Any] | None = None) -> Any:
    """Instantiate a nested spec (see :func:`check_spec`). ``defaults`` fill init parameters the spec leaves
    out and the class takes (a stopper's reader gets the stopper's LLM); ``role`` is a runtime-checkable
    Protocol (:mod:`hopstack.core.roles`) the instance must satisfy."""
    cls, params = check_spec(spec, where)
    accepted = init_parameter_names(cls)
    settings = {k: v for k, v in (defaults or {}).items() if k in accepted and k not in params}
    try:
        instance = cls(**settings, **params)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{where}: {exc}", where, ("init_parameters",)) from exc
    if role is not None and not isinstance(instance, role):
        raise SpecError(f"{where}: {cls.__name__} is not a {role.__name__}", where, ("type",))
    return instance


class NestedComponents:
    """Mixin for components whose init parameters hold nested specs ``{type, init_parameters}``: its
    ``from_dict`` keeps them as plain dicts for the component to build (under hopstack's allowlist and short
    names) instead of letting Haystack deserialize them."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        """Build the component from its serialised form, nested specs left as they are."""
        return cls(**(data.get("init_parameters") or {}))


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set each override (``{"index": DIR}``, ``{"llm": NAME}``) on every component of a pipeline's data,
    and every nested spec inside it, whose class takes that init parameter. ``None`` values are ignored."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    for spec in (data.get("components") or {}).values():
        _override(spec, resolve_component_class(spec["type"]), overrides)
    return data


def _override(spec: dict[str, Any], cls: type, overrides: dict[str, Any]) -> None:
    if spec.get("init_parameters") is None:
        spec["init_parameters"] = {}
    params = spec["init_parameters"]
    accepted = init_parameter_names(cls)
    params.update({k: v for k, v in overrides.items() if k in accepted})
    for nested in params.values():
        if is_spec(nested) and set(nested) <= SPEC_KEYS:
            _override(nested, resolve_nested_class(nested["type"]), overrides)
