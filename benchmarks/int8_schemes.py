"""Where int8's disagreement with float32 comes from: hopstack's float32 ONNX export of each model quantised
three ways and run on the inputs of benchmarks/cpu_inference.py (docs/concepts/backends.md#int8-schemes).

    pip install onnx-ir   # ONNX Runtime's MatMulNBits quantiser imports it
    python benchmarks/int8_schemes.py --index runs/mhr-index --dataset multihop-rag \\
        [--embedder minilm] [--cross-encoder hopstack-reranker] [--repeat 3] [--json FILE]

Schemes, each against the float32 export:
- ``dynamic``: hopstack's ``onnx-int8`` graph (ONNX Runtime's dynamic quantisation: weights int8 per output
  channel; activations int8 with one scale for a row's whole tensor, computed as the row runs).
- ``blockwise``: ONNX Runtime's ``MatMulNBits`` with 8-bit weights in blocks of 32 and ``accuracy_level`` 4
  (activations quantised to int8 in blocks of 32 values, each with its own scale). The fused attention
  nodes' projections stay float32 (the quantiser rewrites MatMul nodes only).
- ``weights-only``: the same 8-bit weights with float32 activations (``accuracy_level`` 1).

Rows run one at a time on one thread each, two side by side, as the backend runs a batch. Reported per
scheme: rows/s and the ratio to float32 ONNX in the same run (best of ``--repeat``); for a cross-encoder
Kendall's tau of its scores on the ``--pairs`` (question, chunk) pairs against float32 and the largest
change; for an embedder the cosine of each text's vector to float32 and Kendall's tau of the pairs'
question-chunk cosines. Prints a table and writes JSON. Not a test.
"""

import argparse
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from cpu_inference import sample_pairs, sample_texts, timed
from results_file import write_results

SCHEMES = ("dynamic", "blockwise", "weights-only")
BLOCK = 32


def export_folder(model, path: str, head: str) -> Path:
    """The folder of hopstack's ONNX export of ``model`` (loaded from ``path`` on onnx-int8, which made it)."""
    from hopstack.models.onnx_backend import export_key, loaded_backend, onnx_home

    if loaded_backend(model) != "onnx-int8":
        raise SystemExit(f"{path}: the onnx-int8 export failed (see the warning above)")
    return onnx_home() / export_key(path, head)


def scheme_file(folder: Path, scheme: str, out: Path) -> Path:
    """The graph that runs ``scheme``: hopstack's own files, or a MatMulNBits rewrite of the float32 one."""
    if scheme == "float32":
        return folder / "model.onnx"
    if scheme == "dynamic":
        return folder / "model-int8.onnx"
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    target = out / f"{folder.name}-{scheme}.onnx"
    if not target.exists():
        accuracy_level = 4 if scheme == "blockwise" else 1
        quantizer = MatMulNBitsQuantizer(
            onnx.load(str(folder / "model.onnx")), bits=8, block_size=BLOCK, is_symmetric=True,
            accuracy_level=accuracy_level,
        )  # fmt: skip
        quantizer.process()
        quantizer.model.save_model_to_file(str(target), use_external_data_format=False)
    return target


def run_rows(path: Path, feeds: list[dict], repeat: int) -> tuple[list[np.ndarray], float]:
    """Each feed's first output row, and rows/s (best of ``repeat``), one-thread sessions two side by side."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}

    def run(feed: dict) -> np.ndarray:
        return session.run(None, {k: v for k, v in feed.items() if k in names})[0][0]

    with ThreadPoolExecutor(2) as pool:
        outputs, seconds = timed(lambda: list(pool.map(run, feeds)), lambda: list(pool.map(run, feeds[:16])), repeat)
    return outputs, len(feeds) / seconds


def tokenized(tokenizer, items: list, max_length: int) -> list[dict]:
    """One unpadded int64 feed a text or a (question, chunk) pair."""
    feeds = []
    for item in items:
        args = item if isinstance(item, tuple) else (item,)
        encoded = tokenizer(*args, truncation=True, max_length=max_length, return_tensors="np")
        feeds.append({key: value.astype(np.int64) for key, value in encoded.items()})
    return feeds


def kendall(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    return round(float(kendalltau(a, b).statistic), 4)


def scheme_rows(folder: Path, feeds: list[dict], repeat: int, out: Path, agreement) -> tuple[list, dict]:
    """The float32 outputs on ``feeds``, and rows/s of float32 and of each scheme with ``agreement(float32
    outputs, outputs)``."""
    reference, base_rate = run_rows(scheme_file(folder, "float32", out), feeds, repeat)
    rows = {"float32": {"rows_per_second": round(base_rate, 1)}}
    for scheme in SCHEMES:
        outputs, rate = run_rows(scheme_file(folder, scheme, out), feeds, repeat)
        rows[scheme] = {
            "rows_per_second": round(rate, 1),
            "ratio_to_float32_onnx": round(rate / base_rate, 2),
            **agreement(reference, outputs),
        }
    return reference, rows


def cross_encoder_rows(name: str, pairs: list[tuple[str, str]], repeat: int, out: Path) -> dict:
    """Each scheme on ``pairs`` scored by the cross-encoder ``name`` (its first logit)."""
    from hopstack.models.cross_encoder import load_cross_encoder
    from hopstack.models.registry import resolve_model

    path = resolve_model(name)
    model = load_cross_encoder(path, "cpu", 128, "onnx-int8")

    def scores(outputs: list[np.ndarray]) -> np.ndarray:
        return np.array([row[0] for row in outputs])

    def agreement(reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
        expected, found = scores(reference), scores(outputs)
        return {
            "kendall_tau": kendall(expected, found),
            "max_abs_change": round(float(np.abs(found - expected).max()), 5),
        }

    feeds = tokenized(model.tokenizer, pairs, 128)
    reference, rows = scheme_rows(export_folder(model, path, "logits"), feeds, repeat, out, agreement)
    std = float(scores(reference).std())
    return {"model": name, "kind": "cross-encoder", "n": len(pairs), "score_std": std, "schemes": rows}


def embedder_rows(name: str, texts: list[str], pairs: list[tuple[str, str]], repeat: int, out: Path) -> dict:
    """Each scheme embedding ``texts`` (timed) and the pairs' questions and chunks (for the cosines' tau)."""
    from hopstack.models.embedders import load_sentence_transformer
    from hopstack.models.registry import resolve_model

    path = resolve_model(name)
    model = load_sentence_transformer(path, "cpu", "onnx-int8")
    sides = sorted({text for pair in pairs for text in pair})

    def vectors(outputs: list[np.ndarray]) -> np.ndarray:
        pooled = np.stack([row.mean(axis=0) for row in outputs])  # mean pooling; rows run unpadded
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)

    def pair_cosines(vecs: np.ndarray) -> np.ndarray:
        at = {text: vecs[len(texts) + i] for i, text in enumerate(sides)}
        return np.array([at[q] @ at[c] for q, c in pairs])

    def agreement(reference: list[np.ndarray], outputs: list[np.ndarray]) -> dict:
        expected, vecs = vectors(reference), vectors(outputs)
        cosines = (vecs[: len(texts)] * expected[: len(texts)]).sum(axis=1)
        return {
            "kendall_tau": kendall(pair_cosines(expected), pair_cosines(vecs)),
            "cosine_min": round(float(cosines.min()), 5),
            "cosine_mean": round(float(cosines.mean()), 5),
        }

    feeds = tokenized(model.tokenizer, texts + sides, model.max_seq_length)
    reference, rows = scheme_rows(export_folder(model, path, "last_hidden_state"), feeds, repeat, out, agreement)
    std = float(pair_cosines(vectors(reference)).std())
    return {"model": name, "kind": "embedder", "n": len(pairs), "score_std": std, "schemes": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="an index folder (its chunks are the texts and passages)")
    parser.add_argument("--dataset", required=True, help="the dataset whose test questions make the pairs")
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--embedder", action="append", default=None, help="repeatable; default minilm")
    parser.add_argument("--cross-encoder", action="append", default=None, help="repeatable; default hopstack-reranker")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    pairs = sample_pairs(args.index, args.dataset, args.pairs)
    texts = sample_texts(args.index, args.texts)
    report = {"index": args.index, "dataset": args.dataset, "block_size": BLOCK, "models": []}
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.embedder or ["minilm"]:
            report["models"].append(embedder_rows(name, texts, pairs, args.repeat, Path(scratch)))
        for name in args.cross_encoder or ["hopstack-reranker"]:
            report["models"].append(cross_encoder_rows(name, pairs, args.repeat, Path(scratch)))
    for entry in report["models"]:
        print(f"\n{entry['model']} ({entry['kind']}, {entry['n']} pairs, float32 score std {entry['score_std']:.4f})")
        print("scheme | rows/s | x float32 ONNX | Kendall tau | other")
        shown = ("rows_per_second", "ratio_to_float32_onnx", "kendall_tau")
        for scheme, row in entry["schemes"].items():
            other = {k: v for k, v in row.items() if k not in shown}
            ratio, tau = row.get("ratio_to_float32_onnx", 1.0), row.get("kendall_tau", 1.0)
            print(f"{scheme} | {row['rows_per_second']} | {ratio} | {tau} | {other}")
    write_results(args.json, report)


if __name__ == "__main__":
    main()
