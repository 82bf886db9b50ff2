"""ONNX Runtime backend for the sentence-transformers models hopstack runs (docs/concepts/backends.md).

A sentence-transformers ``SentenceTransformer`` (the dense embedder, a bi-encoder scorer) or ``CrossEncoder``
(a cross-encoder scorer, a trained reranker) keeps its tokenizer, pooling and normalisation; only the
Hugging Face transformer inside it is replaced by :class:`OnnxTransformer`, which runs the same network as
an ONNX graph in ONNX Runtime. Backends:

- ``torch``: the model as loaded, nothing exported;
- ``onnx``: the transformer exported with ``torch.onnx.export`` and its nodes fused by ONNX Runtime's
  transformer optimizer (float32; the same scores within float rounding);
- ``onnx-int8``: that graph with ONNX Runtime's dynamic quantisation (``quantize_dynamic``: int8 weights per
  output channel, activations quantised on the fly; MatMul, Gather and fused Attention nodes), the fastest
  on a CPU;
- ``auto``: ``onnx-int8`` on a CPU when onnxruntime is installed, else ``torch``.

sentence-transformers' own ONNX export goes through optimum, whose releases require transformers < 5; this
module exports with torch and quantises with onnxruntime's own tools instead, which the pinned stack allows.
The exported files are kept under ``$HOPSTACK_HOME/onnx/KEY`` where KEY hashes the model's identity (its
resolved path and the size, mtime and name of each weight file), the kind of head, the versions of torch,
transformers, onnx and onnxruntime, and the opset; a ``manifest.json`` there records each file's sha256, so a
corrupt or truncated file is found and exported again. An export that fails leaves the model on torch with
one warning naming the reason.
"""

import hashlib
import json
import logging
import os
import shutil
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from hopstack.core.files import file_sha256
from hopstack.core.settings import hopstack_home
from hopstack.errors import HopstackInputError

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
OPSET = 17
EXPORTER_VERSION = 3  # bump when the exported graph, its quantisation or how it is run changes
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_LOG = logging.getLogger(__name__)
_EXPORT_LOCK = threading.Lock()
_WARNED: set[str] = set()


def onnxruntime_available() -> bool:
    """Whether onnxruntime (and onnx, for the export) can be imported."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`; a clear error otherwise."""
    if backend not in BACKENDS:
        raise HopstackInputError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    return backend


def resolve_backend(backend: str, device: str) -> str:
    """The backend a model runs on for ``backend`` on the resolved ``device``: ``auto`` is ``onnx-int8`` on a
    CPU with onnxruntime installed, else ``torch``; an ONNX backend asked for on another device, or without
    onnxruntime, falls back to ``torch`` with one warning."""
    check_backend(backend)
    if backend == "torch":
        return "torch"
    usable = device == "cpu" and onnxruntime_available()
    if backend == "auto":
        return "onnx-int8" if usable else "torch"
    if not usable:
        reason = (
            "onnxruntime is not installed (pip install 'hopstack[onnx]')"
            if device == "cpu"
            else (f"hopstack runs ONNX models on the CPU only, and the device is {device}")
        )
        warn_once(f"backend {backend}: {reason}; using torch")
        return "torch"
    return backend


def loaded_backend(model) -> str:
    """The backend a sentence-transformers model passed through :func:`use_backend` runs on: ``torch``,
    ``onnx`` or ``onnx-int8``."""
    return getattr(model, "hopstack_backend", "torch")


def backend_identity(model) -> dict[str, Any]:
    """What the call cache's keys add for a model's results: nothing on torch (its keys stay as they were);
    on an ONNX backend the backend and the exporter version (the same text run by an older export or
    runtime is another entry)."""
    backend = loaded_backend(model)
    return {} if backend == "torch" else {"backend": backend, "onnx_exporter": EXPORTER_VERSION}


def warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time it comes up in this process."""
    if message not in _WARNED:
        _WARNED.add(message)
        _LOG.warning(message)


def _weight_identity(path: Path) -> list[list[Any]]:
    """Name, size and mtime of each weight and config file of a model folder (a changed file changes the key)."""
    names = sorted(p for p in path.iterdir() if p.suffix in {".safetensors", ".bin", ".json"} and p.is_file())
    return [[p.name, stat.st_size, int(stat.st_mtime)] for p in names for stat in [p.stat()]]


def export_key(model_path: str, head: str) -> str:
    """The cache key of a model's exported files (module docstring)."""
    import onnx
    import onnxruntime
    import torch
    import transformers

    path = Path(model_path)
    identity = {
        "model": str(path.resolve()) if path.exists() else model_path,
        "files": _weight_identity(path) if path.is_dir() else [],
        "head": head,
        "versions": [torch.__version__, transformers.__version__, onnx.__version__, onnxruntime.__version__],
        "opset": OPSET,
        "exporter": EXPORTER_VERSION,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _intact(folder: Path, name: str) -> bool:
    """Whether ``folder`` holds ``name`` with the sha256 its manifest records."""
    manifest = folder / "manifest.json"
    if not (folder / name).is_file() or not manifest.is_file():
        return False
    try:
        recorded = json.loads(manifest.read_text(encoding="utf-8"))["files"][name]
    except (ValueError, KeyError, TypeError):
        return False
    return recorded == file_sha256(folder / name)


def _exportable(model, output: str):
    """The transformer as a module of positional tensors (what ``torch.onnx.export`` traces), returning its
    ``output``: the last hidden state of an encoder or the logits of a classification head."""
    import torch

    class Exportable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            outputs = self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            return outputs[output]

    return Exportable()


def export_transformer(model, tokenizer, output: str, folder: Path, quantize: bool) -> Path:
    """Export the Hugging Face ``model`` (a BERT-style encoder whose ``output`` is read) to
    ``folder/model.onnx`` and, with ``quantize``, ``folder/model-int8.onnx``; returns the file the backend
    runs. Written into a temporary folder and moved into place, so a crash leaves nothing half-written."""
    import torch

    name = "model-int8.onnx" if quantize else "model.onnx"
    if _intact(folder, name):
        return folder / name
    building = folder.parent / f".{folder.name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        # padded example inputs: the traced graph must keep the attention mask (eager attention, no fast path)
        example = tokenizer(["an example to trace the graph with", "short"], return_tensors="pt", padding=True)
        inputs = tuple(example.get(key, torch.zeros_like(example["input_ids"])) for key in INPUTS)
        axes = {key: {0: "batch", 1: "tokens"} for key in INPUTS}
        axes[output] = {0: "batch"} if output == "logits" else {0: "batch", 1: "tokens"}
        previous = getattr(model.config, "_attn_implementation", None)
        was_training = model.training
        model.eval()
        if previous is not None:
            model.config._attn_implementation = "eager"
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's notes on Python control flow it froze
                torch.onnx.export(
                    _exportable(model, output), inputs, str(building / "model.onnx"), input_names=list(INPUTS),
                    output_names=[output], dynamic_axes=axes, opset_version=OPSET, dynamo=False,
                )  # fmt: skip
        finally:
            if previous is not None:
                model.config._attn_implementation = previous
            model.train(was_training)
        fused = fuse_transformer_nodes(building / "model.onnx", model.config)
        files = ["model.onnx"]
        if quantize:
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            root = logging.getLogger()
            level = root.level
            root.setLevel(logging.ERROR)  # the quantiser logs a line per tensor on the root logger
            try:
                quantize_dynamic(
                    str(building / "model.onnx"), str(building / "model-int8.onnx"), weight_type=QuantType.QInt8,
                    per_channel=True, op_types_to_quantize=["MatMul", "Gather", "Attention"],
                    extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},  # fused nodes infer no type
                )  # fmt: skip
            finally:
                root.setLevel(level)
            files.append("model-int8.onnx")
        manifest = {
            "files": {f: file_sha256(building / f) for f in files}, "opset": OPSET, "output": output, "fused": fused,
        }  # fmt: skip
        (building / "manifest.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        shutil.rmtree(folder, ignore_errors=True)
        folder.parent.mkdir(parents=True, exist_ok=True)
        building.rename(folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return folder / name


def fuse_transformer_nodes(path: Path, config) -> dict[str, int]:
    """Rewrite the BERT graph at ``path`` with ONNX Runtime's transformer optimizer (attention, embedding +
    layer norm, skip layer norm and bias + GELU each fused into one node; the same float32 arithmetic);
    returns the fused node counts, empty (the graph left as exported) for another architecture or when the
    optimizer fails."""
    if getattr(config, "model_type", None) != "bert":
        return {}
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(
            str(path), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size,
            opt_level=1,
        )  # fmt: skip
        optimized.save_model_to_file(str(path))
        return {name: count for name, count in optimized.get_fused_operator_statistics().items() if count}
    except Exception as exc:  # noqa: BLE001 (an unfused graph is still correct, only slower)
        warn_once(f"{path}: the transformer optimizer failed ({type(exc).__name__}: {exc}); the graph stays unfused")
        return {}


def onnx_home() -> Path:
    """Where exported models are kept: ``$HOPSTACK_HOME/onnx``."""
    return hopstack_home() / "onnx"


def _session(path: Path, threads: int = 0):
    """An ONNX Runtime CPU session of ``path`` on ``threads`` intra-op threads (0: one per physical core)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_module(session, path: Path, config, output: str):
    """A torch module that runs ``session`` where the Hugging Face transformer ran (same keyword inputs, a
    mapping with ``output`` as its output); the rows of a batch run side by side on a second session of
    ``path`` with one intra-op thread, made on the first batch."""
    import numpy as np
    import torch

    names = {i.name for i in session.get_inputs()}
    workers = os.cpu_count() or 1

    class OnnxTransformer(torch.nn.Module):
        """The transformer of a sentence-transformers model, run by ONNX Runtime one row at a time without its
        padding: no work on padded positions, and a row's output does not depend on the rows batched with it
        (int8 quantises activations with one scale per input tensor, which a batch would share). A single row
        runs on every core's thread; the rows of a batch run side by side, one thread each, which keeps the
        cores busier (1.18-1.34x int8 MiniLM throughput measured on 2 cores). Outputs agree with a lone row's
        to float rounding (bit for bit for int8 MiniLM on the texts checked)."""

        def __init__(self):
            super().__init__()
            self.config = config
            self.session = session
            self._side_by_side: tuple[ThreadPoolExecutor, Any] | None = None
            self._lock = threading.Lock()

        def _run_rows(self, rows: list[dict]) -> list:
            if len(rows) == 1 or workers == 1:
                return [self.session.run([output], row)[0] for row in rows]
            with self._lock:  # the pool and the one-thread session, made once (lone rows never need them)
                if self._side_by_side is None:
                    pool = ThreadPoolExecutor(workers, thread_name_prefix="hopstack-onnx")
                    self._side_by_side = (pool, _session(path, threads=1))
            pool, row_session = self._side_by_side
            return list(pool.map(lambda row: row_session.run([output], row)[0], rows))

        def forward(self, input_ids, attention_mask, token_type_ids=None, **_ignored):
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
            feed = {key: np.ascontiguousarray(value.cpu().numpy(), dtype=np.int64) for key, value in given.items()}
            spans, inputs = [], []
            for i, mask in enumerate(feed["attention_mask"]):
                kept = np.flatnonzero(mask)
                start, end = (int(kept[0]), int(kept[-1]) + 1) if kept.size else (0, 1)
                spans.append((start, end))
                inputs.append({key: value[i : i + 1, start:end] for key, value in feed.items() if key in names})
            rows = [(start, end, result[0]) for (start, end), result in zip(spans, self._run_rows(inputs))]
            if output == "logits":
                return {output: torch.from_numpy(np.stack([result for _, _, result in rows]))}
            hidden = np.zeros((*feed["input_ids"].shape, rows[0][2].shape[-1]), dtype=np.float32)
            for i, (start, end, result) in enumerate(rows):
                hidden[i, start:end] = result
            return {output: torch.from_numpy(hidden)}

    return OnnxTransformer()


def use_backend(model, model_path: str, backend: str) -> None:
    """Run a loaded sentence-transformers ``model`` (``SentenceTransformer`` or ``CrossEncoder``, on the CPU)
    on ``backend`` (already resolved: ``torch``, ``onnx`` or ``onnx-int8``), exporting it on first use; the
    backend it then runs on (``torch`` after a failed export, with one warning) is :func:`loaded_backend`'s."""
    model.hopstack_backend = _switched(model, model_path, backend)


def _switched(model, model_path: str, backend: str) -> str:
    """:func:`use_backend`'s work; returns the backend ``model`` now runs on."""
    if backend == "torch":
        return "torch"
    transformer = model[0]
    output = transformer.modality_config.get("text", {}).get("method_output_name", "last_hidden_state")
    if output not in ("last_hidden_state", "logits"):
        warn_once(f"{model_path}: no ONNX export for a transformer read as {output!r}; using torch")
        return "torch"
    quantize = backend == "onnx-int8"
    name = "model-int8.onnx" if quantize else "model.onnx"
    try:
        folder = onnx_home() / export_key(model_path, output)
        with _EXPORT_LOCK:
            path = export_transformer(transformer.model, transformer.tokenizer, output, folder, quantize)
            try:
                session = _session(path)
            except Exception:  # a file ONNX Runtime cannot read although its sha256 matched: export again
                shutil.rmtree(folder, ignore_errors=True)
                path = export_transformer(transformer.model, transformer.tokenizer, output, folder, quantize)
                session = _session(path)
    except Exception as exc:  # noqa: BLE001 (any exporter failure leaves the model on torch, as documented)
        warn_once(f"{model_path}: ONNX export for backend {backend} failed ({type(exc).__name__}: {exc}); using torch")
        return "torch"
    transformer.model = _onnx_module(session, path, transformer.model.config, output)
    _LOG.info("%s runs on %s (%s)", model_path, backend, folder / name)
    return backend
