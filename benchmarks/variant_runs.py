"""Running a grid's variants one after another, each timed and with the local LLM's work counted."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hopstack.experiments.variants import Variant
from hopstack.graphs import BatchRunner
from hopstack.graphs.runner import RunResult
from hopstack.models.llm import USAGE


@dataclass
class VariantRun:
    """One variant's run: the runner's result, its wall seconds, and the LLM usage per question."""

    variant: Variant
    result: RunResult
    seconds: float
    llm_per_question: dict[str, float]


def run_variants(variants: list[Variant], questions: list[Any], only: list[str] | None = None) -> Iterator[VariantRun]:
    """Each variant (those named in ``only``, when given) warmed up (untimed), then run over the questions."""
    from haystack import Pipeline

    for variant in variants:
        if only and variant.name not in only:
            continue
        pipeline = Pipeline.from_dict(variant.data, allowed_modules=["hopstack"])
        pipeline.warm_up()
        runner = BatchRunner(pipeline)
        before = USAGE.snapshot()
        started = time.perf_counter()
        result = runner.run([runner.question_input(q.question, q.extra) for q in questions])
        seconds = time.perf_counter() - started
        used = {name: (value - before[name]) / len(questions) for name, value in USAGE.snapshot().items()}
        yield VariantRun(variant, result, seconds, used)
