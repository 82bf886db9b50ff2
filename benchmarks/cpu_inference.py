"""torch against ONNX Runtime (float32 and int8) for the encoders hopstack runs, side by side in one run
(docs/concepts/backends.md).

    python benchmarks/cpu_inference.py --index runs/mhr-index --dataset multihop-rag \\
        [--texts 2000] [--pairs 1000] [--repeat 3] [--build-index] [--json benchmarks/results/cpu_inference.json]

1. The cores' sustained float32 matmul rate (torch, the threads torch uses), the yardstick of every
   "physical limit" below: a model's operations a token x tokens / that rate; and the int8 matmul rate of
   ONNX Runtime on the same threads, the yardstick of the int8 backend's own limit.
2. MiniLM embedding throughput on ``--texts`` chunks of the index (the texts an index build embeds, longest
   first as sentence-transformers batches them), per backend (the best of ``--repeat`` timed runs, so that
   another process's load on a shared machine counts as little as it can): texts/s, ratio to torch, and the cosine of
   each text's vector to torch's (min and mean).
3. Cross-encoder scoring (``--cross-encoder``, default the shipped hopstack-reranker) of ``--pairs``
   (question, chunk) pairs: pairs/s, ratio to torch, Kendall's tau and the largest score change against torch.
4. With ``--dataset``: dense retrieval (yaml/dense.yaml) on the dataset's test split with each backend
   encoding the questions against the index (built by torch): the metrics and Fisher's randomization test
   against torch.
5. With ``--build-index``: ``hopstack index`` of the same corpus with torch and with onnx-int8 (wall seconds
   and per stage), and dense retrieval on the int8-built index queried by int8.

Prints tables and writes JSON. Not a test: speed is never asserted in the test suite.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from results_file import variant_rows, write_results

REPO = Path(__file__).resolve().parent.parent
DENSE = REPO / "yaml" / "dense.yaml"
BACKENDS = ("torch", "onnx", "onnx-int8")


def best_rate(run, operations: float, windows: int = 5, seconds: float = 0.6) -> float:
    """Giga-operations a second of ``run()`` (``operations`` each call): the best of ``windows`` windows of
    about ``seconds`` each (the best, so that a moment of another process's load does not lower the yardstick)."""
    run()
    rates = []
    for _ in range(windows):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            run()
            count += 1
        rates.append(operations * count / (time.perf_counter() - started) / 1e9)
    return max(rates)


def matmul_gflops(size: int = 1024) -> float:
    """Sustained float32 GFLOP/s of ``size`` x ``size`` torch matmuls (:func:`best_rate`)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    return best_rate(lambda: torch.mm(a, b), 2 * size**3)


def matmul_gops_int8(size: int = 1024, threads: int = 2) -> float | None:
    """Sustained int8 GOP/s (multiplies and adds) of ``size`` x ``size`` uint8 x int8 matmuls in ONNX Runtime
    (``MatMulInteger``, the kernel family the int8 encoders run on; :func:`best_rate`); None without
    onnxruntime. Cores with AVX-512 VNNI reach several times the float32 rate; AVX2 alone about twice."""
    try:
        import onnxruntime
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.integers(-127, 127, size=(size, size), dtype=np.int8), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "int8_matmul",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [size, size])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [size, size])],
        [weights],
    )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"A": rng.integers(0, 255, size=(size, size), dtype=np.uint8)}
    return best_rate(lambda: session.run(None, feed), 2 * size**3)


def flops_per_token(model, tokens_per_text: float) -> float:
    """Forward operations a token of a BERT-style encoder: 2 x its non-embedding weights (every weight is a
    multiply and an add) + the attention's 4 x layers x width x sequence length (scores and mixing)."""
    transformer = model[0].model
    weights = sum(p.numel() for name, p in transformer.named_parameters() if "embeddings" not in name)
    config = transformer.config
    return 2 * weights + 4 * config.num_hidden_layers * config.hidden_size * tokens_per_text


def token_counts(model, texts: list[str], pairs: bool = False) -> np.ndarray:
    """Tokens each text (or pair) is cut to, as the model reads it."""
    tokenizer = model.tokenizer
    limit = model.max_seq_length if hasattr(model, "max_seq_length") else model.max_length
    if pairs:
        encoded = tokenizer([q for q, _ in texts], [p for _, p in texts], truncation=True, max_length=limit)
    else:
        encoded = tokenizer(texts, truncation=True, max_length=limit)
    return np.array([len(ids) for ids in encoded["input_ids"]])


def timed(run, warm_up, repeat: int = 1):
    """The result of ``run()`` and the best wall seconds of ``repeat`` runs after one ``warm_up()`` call."""
    warm_up()
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return result, best


def with_ratios(rows: dict[str, dict], int8_gops: float | None, fp32_gflops: float) -> dict[str, dict]:
    """Each backend's row with its speed-up over torch and its share of the float32 limit; the int8 row also
    with the int8 limit (every operation at the int8 matmul rate) and its share of it."""
    for name, row in rows.items():
        row["speedup_vs_torch"] = round(rows["torch"]["seconds"] / row["seconds"], 2)
        row["share_of_fp32_limit"] = round(row["physical_limit_seconds_fp32"] / row["seconds"], 3)
        if name == "onnx-int8" and int8_gops:
            row["physical_limit_seconds_int8"] = round(row["physical_limit_seconds_fp32"] * fp32_gflops / int8_gops, 3)
            row["share_of_int8_limit"] = round(row["physical_limit_seconds_int8"] / row["seconds"], 3)
    return rows


def embedding(texts: list[str], gflops: float, int8_gops: float | None, repeat: int) -> dict:
    """Embedding throughput and agreement per backend (section 2)."""
    from hopstack.models.embedders import embed_texts, load_sentence_transformer
    from hopstack.models.onnx_backend import loaded_backend

    torch_model = load_sentence_transformer("minilm", "cpu", "torch")  # the operations counted on torch's modules
    tokens = token_counts(torch_model, texts)
    limit = flops_per_token(torch_model, tokens.mean()) * tokens.sum() / (gflops * 1e9)
    rows, reference = {}, None
    for backend in BACKENDS:
        started = time.perf_counter()
        encoder = load_sentence_transformer("minilm", "cpu", backend)
        load_seconds = time.perf_counter() - started
        vectors, seconds = timed(
            lambda encoder=encoder: embed_texts(encoder, texts, 64, True),
            lambda encoder=encoder: embed_texts(encoder, texts[:64], 64, True),
            repeat,
        )
        reference = vectors if reference is None else reference
        cosine = np.einsum("ij,ij->i", vectors, reference)
        rows[backend] = {
            "backend": loaded_backend(encoder),
            "load_seconds_incl_export": round(load_seconds, 2),
            "seconds": round(seconds, 3),
            "texts_per_second": round(len(texts) / seconds, 1),
            "tokens": int(tokens.sum()),
            "physical_limit_seconds_fp32": round(limit, 3),
            "cosine_to_torch_min": round(float(cosine.min()), 5),
            "cosine_to_torch_mean": round(float(cosine.mean()), 5),
        }
    return {"n_texts": len(texts), "backends": with_ratios(rows, int8_gops, gflops)}


def cross_encoder(
    model: str, pairs: list[tuple[str, str]], gflops: float, int8_gops: float | None, max_length: int, repeat: int
) -> dict:
    """Cross-encoder throughput and agreement per backend (section 3)."""
    from scipy.stats import kendalltau

    from hopstack.models.cross_encoder import CrossEncoderScorer
    from hopstack.models.onnx_backend import loaded_backend

    torch_model = CrossEncoderScorer(model, "cpu", max_length=max_length, cache=False)
    torch_model.warm_up()
    tokens = token_counts(torch_model._encoder, pairs, pairs=True)
    limit = flops_per_token(torch_model._encoder, tokens.mean()) * tokens.sum() / (gflops * 1e9)
    rows, reference = {}, None
    for backend in BACKENDS:
        scorer = CrossEncoderScorer(model, "cpu", 32, max_length=max_length, cache=False, backend=backend)
        started = time.perf_counter()
        scorer.warm_up()
        load_seconds = time.perf_counter() - started
        scores, seconds = timed(
            lambda scorer=scorer: scorer.score(pairs), lambda scorer=scorer: scorer.score(pairs[:32]), repeat
        )
        reference = scores if reference is None else reference
        rows[backend] = {
            "backend": loaded_backend(scorer._encoder),
            "load_seconds_incl_export": round(load_seconds, 2),
            "seconds": round(seconds, 3),
            "pairs_per_second": round(len(pairs) / seconds, 1),
            "tokens": int(tokens.sum()),
            "physical_limit_seconds_fp32": round(limit, 3),
            "kendall_tau_vs_torch": round(float(kendalltau(scores, reference).statistic), 4),
            "max_abs_change_vs_torch": float(np.abs(scores - reference).max()),
            "score_std_torch": float(np.std(reference)),
        }
    return {
        "model": model,
        "n_pairs": len(pairs),
        "max_length": max_length,
        "backends": with_ratios(rows, int8_gops, gflops),
    }


def dense_quality(dataset: str, index: str, backends: list[str], limit: int | None) -> dict:
    """Dense retrieval on the test split per query backend, against torch (section 4)."""
    from hopstack.experiments.compare import compare
    from hopstack.experiments.variants import Grid

    grid = Grid(path=Path("(benchmark)"), parameters={"dense.backend": backends, "dense.device": ["cpu"]})
    result = compare([DENSE], dataset, index, grid=grid, split="test", limit=limit)
    return {"dataset": dataset, "index": index, "n_questions": result.n_questions, "rows": variant_rows(result)}


def build(dataset: str, backend: str, out: Path) -> dict:
    """``hopstack index --dataset DATASET --backend BACKEND`` into ``out``: wall seconds and per stage."""
    from hopstack.datasets.benchmark import dataset_corpus
    from hopstack.index.dense import DenseSettings
    from hopstack.index.store import build_index

    started = time.perf_counter()
    manifest = build_index(dataset_corpus(dataset), out, dense=DenseSettings(backend=backend), device="cpu")
    return {
        "backend": manifest["dense"]["backend"],
        "wall_seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": manifest["stage_seconds"],
        "chunks": manifest["counts"]["chunks"],
    }


def sample_texts(index: str, count: int) -> list[str]:
    """The first ``count`` chunks of an index as its build embedded them (``"title. text"``)."""
    from hopstack.core.text import indexed_text
    from hopstack.index.store import open_index

    folder = open_index(index)
    return [indexed_text(d.meta.get("title", ""), d.content, folder.title_prefix) for d in folder.documents()[:count]]


def sample_pairs(index: str, dataset: str, count: int) -> list[tuple[str, str]]:
    """``count`` (test question, chunk) pairs: each of the first test questions with 25 chunks spread over the
    index."""
    from hopstack.datasets.benchmark import load_dataset

    questions = [q.question for q in load_dataset(dataset, "test").questions]
    texts = sample_texts(index, 5000)
    step = max(1, len(texts) // 25)
    chunks = texts[::step][:25]
    return [(q, c) for q in questions[: -(-count // 25)] for c in chunks][:count]


def print_rows(title: str, rows: dict, columns: list[str]) -> None:
    print(f"\n{title}")
    print(" | ".join(["backend", *columns]))
    for name, row in rows.items():
        print(" | ".join([name, *(str(row.get(c)) for c in columns)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="an index folder (its chunks are the texts embedded)")
    parser.add_argument("--dataset", default="multihop-rag", help="the dataset of the index (questions, corpus)")
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--cross-encoder", default="hopstack-reranker")
    parser.add_argument("--max-length", type=int, default=128, help="the cross-encoder's tokens a pair")
    parser.add_argument(
        "--repeat", type=int, default=3, help="timed runs per backend; the best counts (a shared machine's noise)"
    )
    parser.add_argument("--limit", type=int, help="first N test questions for the retrieval metrics")
    parser.add_argument("--no-quality", action="store_true", help="skip the retrieval metrics (section 4)")
    parser.add_argument("--build-index", action="store_true", help="time the index build per backend (section 5)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    report = {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": sys.version}
    report["repeat"] = args.repeat
    report["matmul_gflops_fp32"] = round(matmul_gflops(), 1)
    print(f"sustained float32 matmul: {report['matmul_gflops_fp32']} GFLOP/s on {report['torch_threads']} threads")
    int8_gops = matmul_gops_int8(threads=report["torch_threads"])
    report["matmul_gops_int8"] = None if int8_gops is None else round(int8_gops, 1)
    print(f"sustained int8 matmul (ONNX Runtime): {report['matmul_gops_int8']} GOP/s")
    gflops = report["matmul_gflops_fp32"]
    report["embedding"] = embedding(sample_texts(args.index, args.texts), gflops, int8_gops, args.repeat)
    columns = ["texts_per_second", "speedup_vs_torch", "share_of_fp32_limit", "share_of_int8_limit"]
    columns += ["cosine_to_torch_min"]
    print_rows(f"MiniLM embedding, {args.texts} chunks", report["embedding"]["backends"], columns)
    write_results(args.json, report)
    pairs = sample_pairs(args.index, args.dataset, args.pairs)
    report["cross_encoder"] = cross_encoder(args.cross_encoder, pairs, gflops, int8_gops, args.max_length, args.repeat)
    columns = ["pairs_per_second", "speedup_vs_torch", "share_of_fp32_limit", "share_of_int8_limit"]
    columns += ["kendall_tau_vs_torch"]
    print_rows(f"{args.cross_encoder}, {len(pairs)} pairs", report["cross_encoder"]["backends"], columns)
    write_results(args.json, report)
    if not args.no_quality:
        report["dense_quality"] = dense_quality(args.dataset, args.index, list(BACKENDS), args.limit)
        for name, row in report["dense_quality"]["rows"].items():
            print(name, row["status"], {m: round(v, 4) for m, v in (row["metrics"] or {}).items()}, row["p_values"])
        write_results(args.json, report)
    if args.build_index:
        with tempfile.TemporaryDirectory(dir=Path(args.index).parent) as scratch:
            report["index_build"] = {b: build(args.dataset, b, Path(scratch) / b) for b in ("torch", "onnx-int8")}
            print_rows("index build", report["index_build"], ["wall_seconds", "chunks"])
            write_results(args.json, report)
            built = dense_quality(args.dataset, str(Path(scratch) / "onnx-int8"), ["onnx-int8"], args.limit)
            report["dense_quality_int8_index"] = built
            for name, row in built["rows"].items():
                print("int8 index:", name, {m: round(v, 4) for m, v in (row["metrics"] or {}).items()})
    write_results(args.json, report)


if __name__ == "__main__":
    main()
