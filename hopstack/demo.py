"""``hopstack demo``: run the yaml/ pipelines over a corpus and its questions and compare them.

By default it uses the sample corpus and questions that ship with the package (a small fictional
world written for this project, with two-hop questions and gold document ids). Variant comparison
with significance tests and reports comes with the evaluation issue; the demo prints a table of
gold-document recall and speed per pipeline, and the time each node took.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hopstack.datasets.questions import Question
from hopstack.errors import HopstackInputError
from hopstack.graphs.runner import BatchRunner, RunResult
from hopstack.pipelines.evaluation import final_documents
from hopstack.pipelines.loading import load_pipeline

SAMPLE_DIR = Path(__file__).parent / "data" / "sample"
SAMPLE_CORPUS = SAMPLE_DIR / "corpus.jsonl"
SAMPLE_QUESTIONS = SAMPLE_DIR / "questions.jsonl"


def default_pipeline_dir() -> Path:
    """The repository's yaml/ folder (beside the package in a source checkout or editable install)."""
    return Path(__file__).resolve().parent.parent / "yaml"


def gold_metrics(ranked_ids: list[str], gold: list[str]) -> dict[str, float]:
    """Document-level gold recall for one question; ``ranked_ids`` are source-document ids (a chunk counts
    as its document, and repeats count at their first rank)."""
    seen: list[str] = []
    for doc_id in ranked_ids:
        if doc_id not in seen:
            seen.append(doc_id)
    gold_set = set(gold)
    first = next((rank for rank, d in enumerate(seen[:10], start=1) if d in gold_set), None)
    return {
        "AnyGold@1": float(bool(gold_set & set(seen[:1]))),
        "AllGold@2": float(gold_set <= set(seen[:2])),
        "AllGold@5": float(gold_set <= set(seen[:5])),
        "MRR@10": 1.0 / first if first else 0.0,
    }


@dataclass
class DemoRow:
    """One pipeline's result in the demo table."""

    pipeline: str
    description: str
    metrics: dict[str, float]
    questions: int
    wall_s: float
    total_s: float = 0.0
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    example: list[str] = field(default_factory=list)


def evaluate_pipeline(path: Path, corpus: Path, questions: list[Question], batch_size: int | None = None) -> DemoRow:
    """Run one pipeline file over ``questions`` and score its documents against the gold ids."""
    pipeline = load_pipeline(path, {"index": str(corpus)})
    runner = BatchRunner(pipeline, batch_size=batch_size)
    runner.warm_up()
    result: RunResult = runner.run(
        [runner.question_input(q.question, q.extra) for q in questions], item_ids=[q.id for q in questions]
    )
    scored = [q for q in questions if q.gold_ids]
    totals: dict[str, float] = {}
    for q, outputs in zip(questions, result.outputs):
        if not q.gold_ids:
            continue
        ranked = [d.meta.get("doc_id", d.id) for d in final_documents(outputs)]
        for key, value in gold_metrics(ranked, q.gold_ids).items():
            totals[key] = totals.get(key, 0.0) + value
    metrics = {k: v / len(scored) for k, v in totals.items()} if scored else {}
    description = ((pipeline.metadata or {}).get("hopstack") or {}).get("description", "")
    example = [d.meta.get("title", d.id) for d in final_documents(result.outputs[0])[:3]]
    return DemoRow(
        pipeline=path.stem,
        description=description,
        metrics=metrics,
        questions=len(questions),
        wall_s=result.wall_s,
        nodes={name: s.to_dict() for name, s in result.stats.items()},
        example=example,
    )


def pipeline_files(pipelines: list[Path] | None) -> list[Path]:
    """The pipeline files to compare: those given, or every file in the repository's yaml/ folder."""
    if pipelines:
        return pipelines
    folder = default_pipeline_dir()
    files = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not files:
        raise HopstackInputError(f"no pipeline files found in {folder}; pass pipeline files with --pipeline")
    return files
