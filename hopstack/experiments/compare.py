"""Comparing pipeline variants on a benchmark (``hopstack compare``).

All variants run as one union graph (:mod:`hopstack.graphs.union`): a node that several variants share
(same component, settings, inputs and index) runs once, and with the node cache an unchanged node costs
nothing on a rerun. Every variant is scored with the dataset's own metrics
(:func:`hopstack.experiments.metrics.score_run`) and tested against a baseline variant, question by
question, with paired tests (Fisher's randomization test by default, or Student's paired t-test); the
p-values of one metric are corrected for testing several variants against the baseline (Holm's method by
default when there are several, or Bonferroni's).

A variant that fails to load, or whose component fails while running, is reported with its error; the
union is rebuilt without it and the others run on (what they had computed comes from the cache).
"""

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from hopstack import __version__
from hopstack.core.ray_cluster import RaySettings
from hopstack.datasets.benchmark import BenchmarkDataset, BenchmarkQuestion, load_dataset
from hopstack.errors import ComponentInputError, HopstackInputError, PipelineRunError
from hopstack.experiments.metrics import ScoredRun, final_documents, predicted_answer, score_run, source_ids
from hopstack.experiments.variants import Grid, Variant, expand_variants
from hopstack.graphs.fingerprint import input_digest
from hopstack.graphs.node_cache import NodeCache, entry_key
from hopstack.graphs.ray_runner import make_runner
from hopstack.graphs.runner import Progress, RunResult
from hopstack.graphs.union import UnionGraph, build_union

STAT_TESTS = ("fisher", "student")
CORRECTIONS = ("none", "holm", "bonferroni")
PRIMARY_METRICS = ("F1", "MRR@10")  # the default quality axis: the first one every variant reports
Status = Callable[[str], None]


@dataclass
class Comparison:
    """One metric of a variant against the baseline: the difference of means (variant - baseline), the paired
    test's p-value, that p-value corrected for the other variants tested on the metric (:func:`adjust_p_values`)
    and whether the corrected one is at most ``max_p``."""

    delta: float
    p_value: float
    p_adjusted: float
    significant: bool


@dataclass
class NodeCost:
    """What one node of a variant cost as if the variant ran alone with no cache: a node shared with other
    variants counts in full for each of them; what the node cache or the call cache served counts what it
    took when it was computed."""

    type: str
    fingerprint: str  # its first 12 characters
    cost_s: float  # seconds computing every question costs, caches aside
    ms_per_question: float
    cached: bool
    shared_with: list[str]


@dataclass
class VariantRun:
    """A variant's results question by question, in the dataset's order: its scores, its answer (None when the
    pipeline has no answer output) and the ranked source-document ids it returned (those its metrics score)."""

    scored: ScoredRun
    answers: list[str | None]
    document_ids: list[list[str]]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VariantRun":
        """The run that :func:`dataclasses.asdict` turned into ``data`` (as the node cache stores it)."""
        return cls(ScoredRun(**data["scored"]), data["answers"], data["document_ids"])


@dataclass
class VariantResult:
    """One variant of a comparison: where it came from, whether it ran, its mean metrics, its tests against the
    baseline (empty for the baseline itself), its cost and, when it ran, its per-question results."""

    name: str
    pipeline: str
    params: dict[str, Any]
    status: str  # "ok" | "failed"
    error: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # metric -> mean over the questions
    compared_to_baseline: dict[str, Comparison] = field(default_factory=dict)
    ms_per_question: float | None = None
    nodes: dict[str, NodeCost] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    run: VariantRun | None = None  # left out of to_json(): write_report writes it to per_question.jsonl


@dataclass
class Significance:
    """How the variants were tested against the baseline: the paired test, its level and the multiple-comparison
    correction that was applied ("none", "holm" or "bonferroni")."""

    test: str  # "fisher" | "student"
    max_p: float
    n_permutations: int | None  # Fisher's test only
    correction: str


@dataclass
class UnionStats:
    """How the variants ran as one union graph: node runs the variants hold, distinct nodes, those computed and
    those served by the node cache, the wall time and the warm-up time."""

    variant_nodes: int
    distinct_nodes: int
    computed_nodes: int
    cached_nodes: int
    wall_s: float
    warm_up_s: float


@dataclass
class CompareResult:
    """What :func:`compare` returns and :func:`hopstack.experiments.report.write_report` renders."""

    dataset: str
    split: str
    n_questions: int
    index: str | None
    baseline: str | None
    primary_metric: str | None  # the plot's quality axis and the first metric column
    significance: Significance
    created: str
    hopstack_version: str
    union: UnionStats
    warnings: list[str]
    variants: list[VariantResult]
    questions: list[BenchmarkQuestion] = field(default_factory=list)  # in the order of every VariantRun

    def ok(self) -> list[VariantResult]:
        """The variants that ran."""
        return [v for v in self.variants if v.status == "ok"]

    def to_json(self) -> dict[str, Any]:
        """The result as JSON-safe values (``results.json``): everything but the questions and the variants'
        per-question results."""
        light = replace(self, questions=[], variants=[replace(v, run=None) for v in self.variants])
        data = asdict(light)
        del data["questions"]
        for variant in data["variants"]:
            del variant["run"]
        return data


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
) -> dict[str, Comparison]:
    """Per metric both runs report, ``other`` against ``baseline`` with a two-sided paired test: the difference
    of means (other - baseline), the p-value and whether it is at most ``max_p`` (uncorrected: ``p_adjusted``
    is the p-value). Both runs must score the same questions in the same order. ``fisher`` is the paired
    randomization test (:func:`randomization_p_value`), ``student`` the paired t-test (scipy's ``ttest_rel``)."""
    if test not in STAT_TESTS:
        raise HopstackInputError(f"test must be one of {', '.join(STAT_TESTS)}, got {test!r}")
    if baseline.question_ids != other.question_ids:
        raise ValueError("paired tests need both runs scored on the same questions in the same order")
    results: dict[str, Comparison] = {}
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
            from scipy import stats  # imported only here: scipy.stats costs ~1.5 s of start-up

            p_value = float(stats.ttest_rel(treatment, control).pvalue)
        p_value = 1.0 if math.isnan(p_value) else p_value
        results[metric] = Comparison(float(treatment.mean() - control.mean()), p_value, p_value, p_value <= max_p)
    return results


def adjust_p_values(p_values: Sequence[float], method: str) -> list[float]:
    """The p-values of tests made together, adjusted for their number m (as statsmodels' ``multipletests``
    computes them): ``bonferroni`` multiplies each by m; ``holm`` (Holm's step-down method) multiplies the
    i-th smallest (i from 0) by m - i and keeps the adjusted values in the raw ones' order (a running
    maximum); both are capped at 1. ``none`` returns them as they are."""
    if method not in CORRECTIONS:
        raise HopstackInputError(f"correction must be one of {', '.join(CORRECTIONS)}, got {method!r}")
    m = len(p_values)
    if method == "none":
        return list(p_values)
    if method == "bonferroni":
        return [min(1.0, m * p) for p in p_values]
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def apply_correction(comparisons: dict[str, dict[str, Comparison]], method: str, max_p: float) -> None:
    """Correct the variants' comparisons (variant -> metric -> comparison) in place, metric by metric over the
    variants that report it (as PyTerrier's Experiment corrects each measure over its systems): ``p_adjusted``
    is the adjusted p-value and ``significant`` whether it is at most ``max_p``."""
    for metric in dict.fromkeys(m for tests in comparisons.values() for m in tests):
        family = [name for name, tests in comparisons.items() if metric in tests]
        adjusted = adjust_p_values([comparisons[name][metric].p_value for name in family], method)
        for name, p_adjusted in zip(family, adjusted):
            comparisons[name][metric] = replace(
                comparisons[name][metric], p_adjusted=p_adjusted, significant=p_adjusted <= max_p
            )


def _score_keys(dataset: BenchmarkDataset, union: UnionGraph) -> dict[str, str]:
    """The cache key of every variant's :class:`VariantRun`: it is a function of the variant's final nodes
    (names, fingerprints, unconsumed sockets) and of the dataset's questions and labels."""
    questions = [[q.id, q.question, q.answers, q.gold_ids, q.facts] for q in dataset.questions]
    labels = input_digest({"format": dataset.format, "questions": questions})
    keys = {}
    for name, view in union.variants.items():
        finals = sorted([node, view.fingerprints[node], sockets] for node, sockets in view.leaves.items() if sockets)
        keys[name] = entry_key(f"variant run {input_digest({'finals': finals})}", labels)
    return keys


def _variant_run(dataset: BenchmarkDataset, outputs: list[dict[str, dict[str, Any]]]) -> VariantRun:
    """A variant's scores, answers and returned document ids from its outputs for the dataset's questions."""
    answers = [answer[0] if (answer := predicted_answer(o)) is not None else None for o in outputs]
    document_ids = [source_ids(final_documents(o)) for o in outputs]
    return VariantRun(score_run(dataset, outputs), answers, document_ids)


def _run_union(
    variants: dict[str, dict[str, Any]],
    dataset: BenchmarkDataset,
    batch_size: int | None,
    node_cache: NodeCache | None,
    failed: dict[str, str],
    status: Status,
    progress: Progress | None,
    ray: RaySettings | None = None,
) -> tuple[UnionGraph | None, RunResult | None, dict[str, VariantRun]]:
    """Run the variants' union over the dataset's questions; returns it, its result and the variants'
    per-question results. When every variant's results are cached, nothing is computed or loaded:
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
        runs = {name: VariantRun.from_dict(found[key][0]) for name, key in keys.items() if key in found}
        runner = make_runner(union.pipeline, batch_size, node_cache, ray)
        inputs = [runner.question_input(q.question, q.extra) for q in dataset.questions]
        where = f" on Ray ({ray.address})" if ray else ""
        status(f"running {len(remaining)} variant(s) as {len(union.pipeline.graph)} distinct node(s){where}")
        try:
            result = runner.run(
                inputs,
                item_ids=[q.id for q in dataset.questions],
                include_outputs_from=union.output_nodes,
                progress=progress,
                stats_only=len(runs) == len(keys) and node_cache is not None,
            )
        except (ComponentInputError, PipelineRunError) as exc:
            if exc.node is None:
                raise
            for name in union.sharing[exc.node]:
                own = next(node for node, u in union.variants[name].names.items() if u == exc.node)
                failed[name] = str(exc).replace(f"'{exc.node}'", f"'{own}'", 1)  # the variant's name for it
                remaining.pop(name)
            continue
        finally:
            if ray:
                runner.close()  # the actors' models are released; a rerun without a failed variant starts new ones
        missing = {name: key for name, key in keys.items() if name not in runs}
        status("scoring")
        for name in missing:
            runs[name] = _variant_run(dataset, [union.variant_outputs(name, item) for item in result.outputs])
        if node_cache is not None:
            node_cache.put_many({key: (asdict(runs[name]), 0.0) for name, key in missing.items()})
        return union, result, runs
    return None, None, {}


def _variant_nodes(union: UnionGraph, result: RunResult, variant: str, n: int) -> dict[str, NodeCost]:
    """One variant's per-node costs (:class:`NodeCost`)."""
    nodes = {}
    for node, union_node in union.variants[variant].names.items():
        stats = result.stats[union_node]
        compute_s = stats.compute_s + stats.cached_compute_s
        nodes[node] = NodeCost(
            type=stats.type,
            fingerprint=union.variants[variant].fingerprints[node][:12],
            cost_s=compute_s,
            ms_per_question=1000 * compute_s / max(n, 1),
            cached=stats.items == 0 and (stats.cached > 0 or stats.cached_compute_s > 0),
            shared_with=[v for v in union.sharing[union_node] if v != variant],
        )
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
    correction: str | None = None,
    metric: str | None = None,
    status: Status | None = None,
    progress: Progress | None = None,
    ray: RaySettings | None = None,
) -> CompareResult:
    """Compare pipeline variants on a dataset; :func:`hopstack.experiments.report.write_report` renders the
    result. ``correction`` (one of :data:`CORRECTIONS`) adjusts each metric's p-values over the variants tested
    against the baseline; by default Holm's method when there are several, else none.

    ``status(message)`` hears what stage the comparison is in, ``progress(node, done, total)`` how far
    the node at work has got. With ``ray`` settings the questions run in shards on Ray actors
    (:class:`~hopstack.graphs.ray_runner.RayRunner`); the results are the same."""
    status = status or (lambda message: None)
    if test not in STAT_TESTS:
        raise HopstackInputError(f"test must be one of {', '.join(STAT_TESTS)}, got {test!r}")
    if correction is not None and correction not in CORRECTIONS:
        raise HopstackInputError(f"correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    data = load_dataset(dataset, split, limit)
    variants: list[Variant] = expand_variants(files, grid, {"index": str(index)} if index else None)
    failed = {v.name: v.error for v in variants if v.error}
    started = time.perf_counter()
    loaded = {v.name: v.data for v in variants if v.data is not None}
    union, result, runs = _run_union(loaded, data, batch_size, node_cache, failed, status, progress, ray)
    wall_s = time.perf_counter() - started
    n = len(data.questions)
    warnings: list[str] = []
    baseline_name = baseline or next((v.name for v in variants), None)
    if baseline and baseline not in {v.name for v in variants}:
        raise HopstackInputError(f"baseline {baseline!r} is not a variant: {', '.join(v.name for v in variants)}")
    if baseline_name not in runs and runs:
        warnings.append(f"baseline {baseline_name!r} failed; comparing against {next(iter(runs))!r} instead")
        baseline_name = next(iter(runs))
    comparisons = {
        name: significance(runs[baseline_name].scored, run.scored, test, max_p)
        for name, run in runs.items()
        if name != baseline_name
    }
    correction = correction or ("holm" if len(comparisons) > 1 else "none")
    apply_correction(comparisons, correction, max_p)
    rows = []
    for variant in variants:
        row = VariantResult(variant.name, str(variant.pipeline), variant.params, "failed", failed.get(variant.name))
        run = runs.get(variant.name)
        if run is not None:
            nodes = _variant_nodes(union, result, variant.name, n)
            row = replace(
                row,
                status="ok",
                metrics=run.scored.means,
                compared_to_baseline=comparisons.get(variant.name, {}),
                ms_per_question=sum(node.ms_per_question for node in nodes.values()),
                nodes=nodes,
                warnings=run.scored.warnings,
                run=run,
            )
        rows.append(row)
    stats = result.stats.values() if result is not None else []
    scored = {name: run.scored for name, run in runs.items()}
    return CompareResult(
        dataset=data.name,
        split=split,
        n_questions=n,
        index=str(index) if index else None,
        baseline=baseline_name,
        primary_metric=_primary_metric(metric, scored) if scored else metric,
        significance=Significance(test, max_p, 1000 if test == "fisher" else None, correction),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        hopstack_version=__version__,
        union=UnionStats(
            variant_nodes=sum(len(view.names) for view in union.variants.values()) if union else 0,
            distinct_nodes=len(result.stats) if result else 0,
            computed_nodes=sum(1 for s in stats if s.items > 0),
            cached_nodes=sum(1 for s in stats if s.items == 0 and (s.cached > 0 or s.cached_compute_s > 0)),
            wall_s=wall_s,
            warm_up_s=sum(s.warm_up_s for s in stats),
        ),
        warnings=warnings,
        variants=rows,
        questions=data.questions,
    )
