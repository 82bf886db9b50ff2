"""Comparing pipeline variants on a benchmark (``hopstack compare``).

All variants run as one union graph (:mod:`hopstack.graphs.union`): a node that several variants share
(same component, settings, inputs and index) runs once, and with the node cache an unchanged node costs
nothing on a rerun. Every variant is scored with the dataset's own metrics
(:func:`hopstack.experiments.metrics.score_run`) and tested against a baseline variant, question by
question, with paired tests (Fisher's randomization test by default, or Student's paired t-test).

A variant that fails to load, or whose component fails while running, is reported with its error; the
union is rebuilt without it and the others run on (what they had computed comes from the cache).
"""

import functools
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hopstack import __version__
from hopstack.datasets.benchmark import BenchmarkDataset, load_dataset
from hopstack.errors import ComponentInputError, HopstackInputError, PipelineRunError
from hopstack.experiments.metrics import ScoredRun, score_run
from hopstack.experiments.variants import Grid, Variant, expand_variants
from hopstack.graphs.fingerprint import input_digest
from hopstack.graphs.node_cache import NodeCache, entry_key
from hopstack.graphs.runner import BatchRunner, Progress, RunResult
from hopstack.graphs.union import UnionGraph, build_union

STAT_TESTS = ("fisher", "student")
PRIMARY_METRICS = ("F1", "MRR@10")  # the default quality axis: the first one every variant reports
Status = Callable[[str], None]


@functools.lru_cache(maxsize=4)
def _random_signs(n_permutations: int, n: int) -> np.ndarray:
    """The fixed-seed relabellings of :func:`randomization_p_value` (shared by every metric and variant)."""
    signs = np.random.default_rng(42).choice((-1.0, 1.0), size=(n_permutations, n))
    signs.setflags(write=False)
    return signs


def randomization_p_value(control: np.ndarray, treatment: np.ndarray, n_permutations: int = 1000) -> float:
    """Two-sided p-value of Fisher's paired randomization test (Smucker et al., CIKM 2007).

    Under the null hypothesis the two systems' scores of a question are exchangeable, so each question's
    difference keeps or flips its sign at random; the p-value is the share of ``n_permutations`` such
    relabellings (fixed seed) whose mean difference is at least as far from 0 as the observed one. This
    is what scipy's ``permutation_test(..., permutation_type="samples")`` computes; done here as one
    matrix product because scipy loops over the questions (seconds a test at thousands of questions).
    """
    differences = treatment - control
    observed = abs(differences.mean())
    permuted = np.abs(_random_signs(n_permutations, differences.size) @ differences) / differences.size
    return float(np.mean(permuted >= observed - 1e-12))


def significance(
    baseline: ScoredRun, other: ScoredRun, test: str = "fisher", max_p: float = 0.05, n_permutations: int = 1000
) -> dict[str, dict[str, Any]]:
    """Per metric both runs report: the difference of means (other - baseline), the two-sided paired
    test's p-value and whether it is at most ``max_p``. Both runs must score the same questions in the
    same order. ``fisher`` is the paired randomization test (:func:`randomization_p_value`), ``student``
    the paired t-test (scipy's ``ttest_rel``)."""
    from scipy import stats

    if test not in STAT_TESTS:
        raise HopstackInputError(f"test must be one of {', '.join(STAT_TESTS)}, got {test!r}")
    if baseline.question_ids != other.question_ids:
        raise ValueError("paired tests need both runs scored on the same questions in the same order")
    results: dict[str, dict[str, Any]] = {}
    for metric, control_values in baseline.per_query.items():
        if metric not in other.per_query:
            continue
        control = np.asarray(control_values, dtype=np.float64)
        treatment = np.asarray(other.per_query[metric], dtype=np.float64)
        if np.array_equal(control, treatment):
            p_value = 1.0
        elif test == "fisher":
            p_value = randomization_p_value(control, treatment, n_permutations)
        else:
            p_value = float(stats.ttest_rel(treatment, control).pvalue)
        p_value = 1.0 if math.isnan(p_value) else p_value
        results[metric] = {
            "delta": float(treatment.mean() - control.mean()),
            "p_value": p_value,
            "significant": p_value <= max_p,
        }
    return results


def _score_keys(dataset: BenchmarkDataset, union: UnionGraph) -> dict[str, str]:
    """The cache key of every variant's scores: they are a function of its final nodes (names,
    fingerprints, unconsumed sockets) and of the dataset's questions and labels."""
    questions = [[q.id, q.question, q.answers, q.gold_ids, q.facts] for q in dataset.questions]
    labels = input_digest({"format": dataset.format, "questions": questions})
    keys = {}
    for name, view in union.variants.items():
        finals = sorted([node, view.fingerprints[node], sockets] for node, sockets in view.leaves.items() if sockets)
        keys[name] = entry_key(f"scores {input_digest({'finals': finals})}", labels)
    return keys


def _run_union(
    variants: dict[str, dict[str, Any]],
    dataset: BenchmarkDataset,
    batch_size: int | None,
    node_cache: NodeCache | None,
    failed: dict[str, str],
    status: Status,
    progress: Progress | None,
) -> tuple[UnionGraph | None, RunResult | None, dict[str, ScoredRun]]:
    """Run the variants' union over the dataset's questions; returns it, its result and the variants'
    scores found in the cache. When every variant's scores are cached, nothing is computed or loaded:
    the run only reads what each node cost. Variants that fail to load or whose node fails are moved to
    ``failed`` and the rest run again; returns (None, None, {}) when none is left."""
    remaining = dict(variants)
    while remaining:
        union, load_failures = build_union(remaining)
        for name, error in load_failures.items():
            failed[name] = error
            remaining.pop(name)
        if load_failures:
            continue
        keys = _score_keys(dataset, union)
        found = node_cache.get_many(keys.values()) if node_cache is not None else {}
        cached_scores = {name: found[key][0] for name, key in keys.items() if key in found}
        runner = BatchRunner(union.pipeline, batch_size=batch_size, node_cache=node_cache)
        inputs = [runner.question_input(q.question, q.extra) for q in dataset.questions]
        status(f"running {len(remaining)} variant(s) as {len(union.pipeline.graph)} distinct node(s)")
        try:
            result = runner.run(
                inputs,
                item_ids=[q.id for q in dataset.questions],
                include_outputs_from=union.output_nodes,
                progress=progress,
                stats_only=len(cached_scores) == len(keys) and node_cache is not None,
            )
        except (ComponentInputError, PipelineRunError) as exc:
            if exc.node is None:
                raise
            for name in union.sharing[exc.node]:
                own = next(node for node, u in union.variants[name].names.items() if u == exc.node)
                failed[name] = str(exc).replace(f"'{exc.node}'", f"'{own}'", 1)  # the variant's name for it
                remaining.pop(name)
            continue
        missing = {name: key for name, key in keys.items() if name not in cached_scores}
        status("scoring")
        for name in missing:
            cached_scores[name] = score_run(dataset, [union.variant_outputs(name, item) for item in result.outputs])
        if node_cache is not None:
            node_cache.put_many({key: (cached_scores[name], 0.0) for name, key in missing.items()})
        return union, result, cached_scores
    return None, None, {}


def _variant_nodes(union: UnionGraph, result: RunResult, variant: str, n: int) -> dict[str, dict[str, Any]]:
    """One variant's per-node costs: a shared node counts in full for every variant that uses it; a
    cached node counts what it took when it was computed."""
    nodes = {}
    for node, union_node in union.variants[variant].names.items():
        stats = result.stats[union_node]
        compute_s = stats.wall_s + stats.cached_compute_s
        nodes[node] = {
            "type": stats.type,
            "fingerprint": union.variants[variant].fingerprints[node][:12],
            "wall_s": compute_s,
            "ms_per_question": 1000 * compute_s / max(n, 1),
            "cached": stats.items == 0 and (stats.cached > 0 or stats.cached_compute_s > 0),
            "shared_with": [v for v in union.sharing[union_node] if v != variant],
        }
    return nodes


def _primary_metric(requested: str | None, scored: dict[str, ScoredRun]) -> str:
    reported = [set(run.means) for run in scored.values()]
    if requested:
        if reported and not all(requested in metrics for metrics in reported):
            raise HopstackInputError(f"metric {requested!r} is not reported for every variant")
        return requested
    common = set.intersection(*reported) if reported else set()
    return next((m for m in PRIMARY_METRICS if m in common), next(iter(sorted(common)), "MRR@10"))


def compare(
    files: list[Path],
    dataset: str,
    index: str | Path | None = None,
    grid: Grid | None = None,
    baseline: str | None = None,
    limit: int | None = None,
    split: str = "all",
    batch_size: int | None = None,
    node_cache: NodeCache | None = None,
    test: str = "fisher",
    max_p: float = 0.05,
    metric: str | None = None,
    status: Status | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Compare pipeline variants on a dataset; returns the JSON-safe result that
    :func:`hopstack.experiments.report.write_report` renders (schema in that module).

    ``status(message)`` hears what stage the comparison is in, ``progress(node, done, total)`` how far
    the node at work has got."""
    status = status or (lambda message: None)
    if test not in STAT_TESTS:
        raise HopstackInputError(f"test must be one of {', '.join(STAT_TESTS)}, got {test!r}")
    data = load_dataset(dataset, split, limit)
    variants: list[Variant] = expand_variants(files, grid, {"index": str(index)} if index else None)
    failed = {v.name: v.error for v in variants if v.error}
    started = time.perf_counter()
    loaded = {v.name: v.data for v in variants if v.data is not None}
    union, result, scored = _run_union(loaded, data, batch_size, node_cache, failed, status, progress)
    wall_s = time.perf_counter() - started
    n = len(data.questions)
    warnings: list[str] = []
    baseline_name = baseline or next((v.name for v in variants), None)
    if baseline and baseline not in {v.name for v in variants}:
        raise HopstackInputError(f"baseline {baseline!r} is not a variant: {', '.join(v.name for v in variants)}")
    if baseline_name not in scored and scored:
        warnings.append(f"baseline {baseline_name!r} failed; comparing against {next(iter(scored))!r} instead")
        baseline_name = next(iter(scored))
    rows = []
    for variant in variants:
        row: dict[str, Any] = {
            "name": variant.name,
            "pipeline": str(variant.pipeline),
            "params": variant.params,
            "status": "ok" if variant.name in scored else "failed",
            "error": failed.get(variant.name),
            "metrics": {},
            "compared_to_baseline": {},
            "ms_per_question": None,
            "nodes": {},
            "warnings": [],
        }
        if variant.name in scored:
            run = scored[variant.name]
            nodes = _variant_nodes(union, result, variant.name, n)
            row["metrics"] = run.means
            row["warnings"] = run.warnings
            row["nodes"] = nodes
            row["ms_per_question"] = sum(node["ms_per_question"] for node in nodes.values())
            if variant.name != baseline_name:
                row["compared_to_baseline"] = significance(scored[baseline_name], run, test, max_p)
        rows.append(row)
    stats = result.stats.values() if result is not None else []
    return {
        "dataset": data.name,
        "split": split,
        "n_questions": n,
        "index": str(index) if index else None,
        "baseline": baseline_name,
        "primary_metric": _primary_metric(metric, scored) if scored else metric,
        "significance": {"test": test, "max_p": max_p, "n_permutations": 1000 if test == "fisher" else None},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hopstack_version": __version__,
        "union": {
            "variant_nodes": sum(len(view.names) for view in union.variants.values()) if union else 0,
            "distinct_nodes": len(result.stats) if result else 0,
            "computed_nodes": sum(1 for s in stats if s.items > 0),
            "cached_nodes": sum(1 for s in stats if s.items == 0 and (s.cached > 0 or s.cached_compute_s > 0)),
            "wall_s": wall_s,
            "warm_up_s": sum(s.warm_up_s for s in stats),
        },
        "warnings": warnings,
        "variants": rows,
    }
