"""Evaluating a pipeline on a benchmark with its own protocol (``hopstack eval``)."""

import time
from pathlib import Path
from typing import Any

from hopstack.core.progress import Status
from hopstack.core.ray_cluster import RaySettings
from hopstack.datasets.base import SPLITS, split_items
from hopstack.datasets.benchmark import load_dataset
from hopstack.experiments.metrics import final_documents, score_run
from hopstack.graphs.ray_runner import make_runner
from hopstack.graphs.runner import Progress
from hopstack.index.store import corpus_hash, is_index, open_index
from hopstack.spec.loading import load_pipeline

__all__ = ["SPLITS", "corpus_mismatch", "evaluate", "final_documents", "split_items"]


def corpus_mismatch(index: str | Path, corpus: Path) -> str | None:
    """A warning when ``index`` was not built from ``corpus``: an index folder is judged by its manifest's
    corpus sha256, a corpus file or folder by its own; None when they match or ``index`` does not exist."""
    index = Path(index)
    if not index.exists():
        return None
    indexed = open_index(index, verify=False).manifest["source"]["sha256"] if is_index(index) else corpus_hash(index)
    expected = corpus_hash(corpus)
    if indexed == expected:
        return None
    return (
        f"the index {index} was built from another corpus (sha256 {indexed[:12]}...) than the dataset's "
        f"{corpus} (sha256 {expected[:12]}...): its document ids may not match the gold ids"
    )


def evaluate(
    pipeline_file: str | Path,
    dataset: str,
    index: str | Path,
    limit: int | None = None,
    split: str = "all",
    batch_size: int | None = None,
    status: Status | None = None,
    progress: Progress | None = None,
    ray: RaySettings | None = None,
) -> dict[str, Any]:
    """Run a pipeline over a dataset's questions and score it with the dataset's metrics (:func:`score_run`).
    As in ``hopstack run --questions``, a question's ``extra`` values that name pipeline inputs are passed on.
    ``status(message)`` hears which step the evaluation is at, ``progress(node, done, total)`` how far the node
    at work has got. With ``ray`` settings the questions run in shards on Ray actors
    (:class:`~hopstack.graphs.ray_runner.RayRunner`); the scores are the same.

    Returns ``{"pipeline", "dataset", "split", "n_questions", "metrics", "timings", "warnings"}``; timings
    hold the warm-up and run seconds, the cost in ms per question (model calls the call cache served count
    what they took when made) beside the wall ms per question actually spent, and per node its stats and
    ``ms_per_question`` (its cost).
    """
    status = status or (lambda message: None)
    status(f"loading {dataset} and {pipeline_file}")
    data = load_dataset(dataset, split, limit)
    questions = data.questions
    runner = make_runner(load_pipeline(pipeline_file, {"index": str(index)}), batch_size, ray=ray)
    where = f" on Ray ({ray.address})" if ray else ""
    status(f"warming up {Path(pipeline_file).stem}'s {len(runner.pipeline.graph)} component(s){where}")
    started = time.perf_counter()
    try:
        runner.warm_up()
        warm_up_s = time.perf_counter() - started
        status(f"running {len(questions)} question(s)")
        result = runner.run(
            [runner.question_input(q.question, q.extra) for q in questions],
            item_ids=[q.id for q in questions],
            progress=progress,
        )
    finally:
        if ray:
            runner.close()
    status("scoring")
    scored = score_run(data, result.outputs)
    mismatch = corpus_mismatch(index, data.corpus)
    per_question = 1000 / max(len(questions), 1)
    return {
        "pipeline": Path(pipeline_file).stem,
        "dataset": data.name,
        "split": split,
        "n_questions": len(questions),
        "metrics": scored.means,
        "timings": {
            "warm_up_s": warm_up_s,
            "run_s": result.wall_s,
            "ms_per_question": (result.wall_s + sum(s.call_cached_s for s in result.stats.values())) * per_question,
            "wall_ms_per_question": result.wall_s * per_question,
            "nodes": {
                name: {**stats.to_dict(), "ms_per_question": stats.compute_s * per_question}
                for name, stats in result.stats.items()
            },
        },
        "warnings": ([mismatch] if mismatch else []) + scored.warnings,
    }
