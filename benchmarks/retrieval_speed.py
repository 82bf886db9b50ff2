"""Retrieval speed on the MultiHop-RAG chunks of an index folder.

- BM25 query throughput: hopstack's batched BM25Retriever against rank-bm25's BM25Okapi (same
  tokenisation) and Haystack's InMemoryBM25Retriever (its own tokenisation), top 10 per query;
- dense search throughput: the DenseRetriever end to end (query embedding + FAISS), and FAISS search
  alone for flat, HNSW and IVF indexes over the stored embeddings (with their recall@10 against flat);
- embedding throughput: hopstack's embedder against calling sentence-transformers directly;
- index build time per stage and size per component, from the index's manifest.

Each timing is the fastest of ``--repeats`` interleaved rounds. Prints tables and writes JSON:

    python benchmarks/retrieval_speed.py --index runs/mhr-index --json benchmarks/results/retrieval_speed.json
"""

import argparse
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np
from results_file import write_results

from hopstack.components.retrieval import BM25Retriever, DenseRetriever
from hopstack.core.text import indexed_text
from hopstack.datasets.multihop_rag import load_queries
from hopstack.datasets.registry import resolve_dataset
from hopstack.index.dense import DenseSettings, build_faiss, configure_search
from hopstack.index.store import open_index
from hopstack.models.embedders import embed_texts, load_sentence_transformer

# measure the models, not the on-disk call cache
os.environ["HOPSTACK_CACHE"] = "off"


def fastest(ways: dict, repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in ways}
    for _ in range(repeats):
        for name, fn in ways.items():
            gc.collect()
            started = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def bm25_section(index: str, queries: list[str], sample: int, repeats: int) -> dict:
    from haystack import Document
    from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from rank_bm25 import BM25Okapi

    ours = BM25Retriever(index=index, top_k=10)
    ours.warm_up()
    tokenizer = ours._model.tokenizer
    texts = [indexed_text(d.meta.get("title", ""), d.content, True) for d in ours._documents]
    okapi = BM25Okapi(tokenizer.decode(tokenizer.tokenize(texts, update_vocab=False, show_progress=False)))
    sample_tokens = tokenizer.decode(tokenizer.tokenize(queries[:sample], update_vocab=False, show_progress=False))
    store = InMemoryDocumentStore()
    store.write_documents([Document(id=d.id, content=t) for d, t in zip(ours._documents, texts)])
    haystack_bm25 = InMemoryBM25Retriever(document_store=store, top_k=10)

    def rank_bm25_loop():
        for tokens in sample_tokens:
            np.argsort(-okapi.get_scores(tokens))[:10]

    seconds = fastest(
        {
            "hopstack_batch": lambda: ours.run_batch(query=queries),
            "hopstack_one_at_a_time": lambda: [ours.run(query=q) for q in queries[:sample]],
            "rank_bm25": rank_bm25_loop,
            "haystack_in_memory": lambda: [haystack_bm25.run(query=q) for q in queries[:sample]],
        },
        repeats,
    )
    qps = {
        "hopstack_batch": len(queries) / seconds["hopstack_batch"],
        "hopstack_one_at_a_time": sample / seconds["hopstack_one_at_a_time"],
        "rank_bm25": sample / seconds["rank_bm25"],
        "haystack_in_memory": sample / seconds["haystack_in_memory"],
    }
    return {
        "chunks": len(texts),
        "queries": {"hopstack_batch": len(queries), "others": sample},
        "qps": qps,
        "speedup_vs_rank_bm25": qps["hopstack_batch"] / qps["rank_bm25"],
        "speedup_vs_haystack_in_memory": qps["hopstack_batch"] / qps["haystack_in_memory"],
    }


def dense_section(index: str, queries: list[str], repeats: int) -> dict:
    folder = open_index(index)
    retriever = DenseRetriever(index=index, top_k=10, device="cpu")
    retriever.warm_up()
    encoder = retriever._encoder
    vectors = np.load(Path(index) / "dense" / "embeddings.npy")
    query_vectors = embed_texts(encoder, queries, 64, True)
    indexes = {"flat": folder.faiss()}
    for kind in ("hnsw", "ivf"):
        indexes[kind] = build_faiss(vectors, DenseSettings(faiss=kind))
        configure_search(indexes[kind], ef_search=128, nprobe=16)
    seconds = fastest({"retriever_end_to_end": lambda: retriever.run_batch(query=queries)}, max(1, repeats - 1))
    seconds.update(fastest({kind: (lambda i=i: i.search(query_vectors, 10)) for kind, i in indexes.items()}, repeats))
    _, exact = indexes["flat"].search(query_vectors, 10)
    recall = {}
    for kind in ("hnsw", "ivf"):
        _, found = indexes[kind].search(query_vectors, 10)
        recall[kind] = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact, found)]))
    return {
        "vectors": int(vectors.shape[0]),
        "queries": len(queries),
        "qps": {name: len(queries) / s for name, s in seconds.items()},
        "recall_at_10_vs_flat": recall,
    }


def embedding_section(index: str, count: int, repeats: int) -> dict:
    folder = open_index(index)
    texts = [indexed_text(d.meta["title"], d.content, True) for d in folder.documents()[:count]]
    encoder = load_sentence_transformer("minilm", "cpu")
    seconds = fastest(
        {
            "hopstack_embed_texts": lambda: embed_texts(encoder, texts, 64, True),
            "sentence_transformers_encode": lambda: encoder.encode(
                texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
            ),
        },
        repeats,
    )
    return {"texts": len(texts), "texts_per_s": {name: len(texts) / s for name, s in seconds.items()}}


def build_section(index: str) -> dict:
    folder = open_index(index)
    sizes: dict[str, int] = {}
    for name, info in folder.manifest["files"].items():
        component = name.split("/")[0]
        sizes[component] = sizes.get(component, 0) + info["bytes"]
    return {
        "counts": folder.manifest["counts"],
        "build_seconds": folder.manifest["build_seconds"],
        "stage_seconds": folder.manifest.get("stage_seconds", {}),
        "bytes": sizes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True, help="a MultiHop-RAG index folder with a dense part")
    parser.add_argument("--dataset", default="multihop-rag")
    parser.add_argument("--sample", type=int, default=300, help="queries for the one-at-a-time baselines")
    parser.add_argument("--embed", type=int, default=1024, help="chunks for the embedding comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    _, folder = resolve_dataset(args.dataset)
    queries = [q.question for q in load_queries(folder)]

    print("BM25 ...", file=sys.stderr)
    bm25 = bm25_section(args.index, queries, args.sample, args.repeats)
    print("dense ...", file=sys.stderr)
    dense = dense_section(args.index, queries, args.repeats)
    print("embedding ...", file=sys.stderr)
    embedding = embedding_section(args.index, args.embed, args.repeats)
    build = build_section(args.index)

    print(f"\nBM25 over {bm25['chunks']} chunks, top 10 (queries/s)")
    for name, value in bm25["qps"].items():
        print(f"  {name:<26} {value:>10,.0f}")
    print(
        f"  hopstack batch vs rank-bm25: {bm25['speedup_vs_rank_bm25']:.0f}x, "
        f"vs Haystack InMemoryBM25Retriever: {bm25['speedup_vs_haystack_in_memory']:.1f}x"
    )
    print(f"\ndense over {dense['vectors']} vectors, top 10 (queries/s)")
    for name, value in dense["qps"].items():
        print(f"  {name:<26} {value:>10,.0f}")
    print(f"  recall@10 against flat: {dense['recall_at_10_vs_flat']}")
    print(f"\nembedding {embedding['texts']} chunks (texts/s)")
    for name, value in embedding["texts_per_s"].items():
        print(f"  {name:<30} {value:>8.1f}")
    print(f"\nindex build: {build['build_seconds']} s; stages {build['stage_seconds']}; bytes {build['bytes']}")
    write_results(args.json, {"bm25": bm25, "dense": dense, "embedding": embedding, "build": build})


if __name__ == "__main__":
    main()
