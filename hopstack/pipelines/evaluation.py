"""Evaluating a pipeline on a benchmark with its own protocol (``hopstack eval``)."""

import time
from pathlib import Path
from typing import Any

from haystack import Document

from hopstack.datasets.multihop_rag import load_queries
from hopstack.datasets.registry import resolve_dataset
from hopstack.errors import HopstackInputError
from hopstack.graphs.runner import BatchRunner
from hopstack.pipelines.loading import load_pipeline
from hopstack.pipelines.metrics import mean_metrics, multihop_rag_query_metrics

SPLITS = ("all", "dev", "test")


def final_documents(outputs: dict[str, dict[str, Any]]) -> list[Document]:
    """The documents a pipeline returns for one question: its (first) unconsumed ``documents`` output."""
    for sockets in outputs.values():
        if "documents" in sockets:
            return sockets["documents"]
    return []


def split_items(items: list, split: str) -> list:
    """A fixed split for tuning without peeking: ``dev`` is every fifth item (positions 0, 5, 10, ...),
    ``test`` the other four fifths, ``all`` everything."""
    if split not in SPLITS:
        raise HopstackInputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "all":
        return items
    return [item for i, item in enumerate(items) if (i % 5 == 0) == (split == "dev")]


def evaluate(
    pipeline_file: str | Path,
    dataset: str,
    index: str | Path,
    limit: int | None = None,
    split: str = "all",
    batch_size: int | None = None,
) -> dict[str, Any]:
    """Run a pipeline over a dataset's questions and score it with the dataset's protocol.

    Returns ``{"pipeline", "dataset", "split", "n_questions", "metrics", "timings"}``.
    """
    name, folder = resolve_dataset(dataset)
    if name != "multihop-rag":
        raise HopstackInputError(f"evaluation of {name!r} is not available yet")
    queries = split_items(load_queries(folder), split)[:limit]
    runner = BatchRunner(load_pipeline(pipeline_file, {"index": str(index)}), batch_size=batch_size)
    started = time.perf_counter()
    runner.warm_up()
    warm_up_s = time.perf_counter() - started
    result = runner.run([runner.question_input(q.question) for q in queries], item_ids=[q.id for q in queries])
    per_query = [
        multihop_rag_query_metrics([d.content or "" for d in final_documents(outputs)], q.facts)
        for q, outputs in zip(queries, result.outputs)
    ]
    return {
        "pipeline": Path(pipeline_file).stem,
        "dataset": name,
        "split": split,
        "n_questions": len(queries),
        "metrics": mean_metrics(per_query),
        "timings": {
            "warm_up_s": warm_up_s,
            "run_s": result.wall_s,
            "ms_per_question": 1000 * result.wall_s / max(len(queries), 1),
            "nodes": {name: stats.to_dict() for name, stats in result.stats.items()},
        },
    }
