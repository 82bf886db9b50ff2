"""Reports of a pipeline-variant comparison: the Markdown tables, the PNG plots, the self-contained HTML, the JSON
and the per-question file."""

import dataclasses
import json
import re
from pathlib import Path

import pytest

from conftest import CHROMIUM, CHROMIUM_FLAGS
from hopstack.datasets.benchmark import BenchmarkQuestion
from hopstack.experiments.compare import (
    CompareResult,
    Comparison,
    NodeCost,
    Significance,
    UnionStats,
    VariantResult,
    VariantRun,
)
from hopstack.experiments.metrics import ScoredRun
from hopstack.experiments.report import (
    markdown_table,
    new_run_folder,
    per_question_rows,
    plot_quality_latency,
    significance_table,
    write_report,
)

ERROR = "yaml/broken.yaml:3:5: component 'x': unknown type <NoSuchRetriever>"
QUESTIONS = [
    BenchmarkQuestion("q1", "Who wrote X?", ["Ann"], ["d1"], [], "inference"),
    BenchmarkQuestion("q2", "Where is Y?", ["Rome"], ["d2", "d3"], []),
]


def _node(type_: str, cost_s: float, shared_with: list[str], cached: bool = False) -> NodeCost:
    return NodeCost(type_, "ab12cd34ef56ab12cd34", cost_s, 1000 * cost_s / 100, cached, shared_with)


def _compared(**tests: tuple[float, float, float, bool]) -> dict[str, Comparison]:
    """Comparisons by metric from (delta, p-value, adjusted p-value, significant)."""
    return {metric: Comparison(*values) for metric, values in tests.items()}


def _run(per_query: dict[str, list[float]], answers: list[str | None], document_ids: list[list[str]]) -> VariantRun:
    means = {metric: sum(values) / len(values) for metric, values in per_query.items()}
    return VariantRun(ScoredRun([q.id for q in QUESTIONS], per_query, means, []), answers, document_ids)


def _variant(name: str, metrics: dict, compared: dict, ms: float, nodes: dict, run: VariantRun, warnings=()):
    return VariantResult(
        name, f"yaml/{name.split('[')[0]}.yaml", {}, "ok", None, metrics, compared, ms, nodes, list(warnings), run
    )


@pytest.fixture
def result() -> CompareResult:
    bm25 = _node("BM25Retriever", 0.5, ["hybrid", "hybrid[fusion.mode=rrf]"])
    dense = _node("DenseRetriever", 4.0, ["hybrid[fusion.mode=rrf]"])
    return CompareResult(
        dataset="multihop-rag",
        split="all",
        n_questions=100,
        index="runs/mhr-index",
        baseline="bm25",
        primary_metric="MRR@10",
        significance=Significance("fisher", 0.05, 1000, "holm"),
        created="2026-11-28T20:00:00+00:00",
        hopstack_version="0.1.0",
        union=UnionStats(6, 4, 3, 1, 12.0, 2.0),
        warnings=[],
        variants=[
            _variant(
                "bm25",
                {"MRR@10": 0.5996, "Hits@10": 0.8763},
                {},
                5.0,
                {"bm25": bm25},
                _run({"MRR@10": [1.0, 0.5], "Hits@10": [1.0, 1.0]}, [None, None], [["d1", "d9"], ["d3"]]),
            ),
            _variant(
                "hybrid",
                {"MRR@10": 0.6160, "Hits@10": 0.8701, "context_tokens": 812.25},
                # Holm over the two variants: MRR@10 p = 0.001, 0.01 -> 0.002, 0.01; Hits@10 0.4, 0.02 -> 0.4, 0.04
                _compared(**{"MRR@10": (0.0164, 0.001, 0.002, True), "Hits@10": (-0.0062, 0.4, 0.4, False)}),
                50.0,
                {"bm25": bm25, "dense": dense, "fusion": _node("DocumentJoiner", 0.01, [], cached=True)},
                _run({"MRR@10": [0.5, 1.0], "context_tokens": [800.0, 824.5]}, ["Ann", ""], [["d9", "d1"], ["d2"]]),
                warnings=["fusion.top_k is larger than the retrievers' top_k"],
            ),
            _variant(
                "hybrid[fusion.mode=rrf]",
                {"MRR@10": 0.5801, "Hits@10": 0.9012},
                _compared(**{"MRR@10": (-0.0195, 0.01, 0.01, True), "Hits@10": (0.0249, 0.02, 0.04, True)}),
                46.0,
                {"bm25": bm25, "dense": dense, "fusion": _node("DocumentJoiner", 0.02, [])},
                _run({"MRR@10": [0.0, 0.0]}, ["Bob", "Rome"], [[], ["d3", "d2"]]),
            ),
            VariantResult("broken", "yaml/broken.yaml", {}, "failed", ERROR),
        ],
        questions=QUESTIONS,
    )


def _cells(table: str) -> list[list[str]]:
    """The cells of a Markdown table's body rows."""
    lines = [line for line in table.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]


def _rows(table: str) -> dict[str, list[str]]:
    """The table's body rows by variant name (the first cell without its baseline or failure mark)."""
    return {re.sub(r" \((baseline|failed)\)$", "", row[0]): row for row in _cells(table)}


def test_markdown_table_marks_significant_differences_and_the_baseline(result):
    table = markdown_table(result)
    header = table.splitlines()[0]
    assert header == "| variant | MRR@10 | Hits@10 | ms/question | context tokens |"
    rows = _rows(table)
    assert list(rows) == ["bm25", "hybrid", "hybrid[fusion.mode=rrf]", "broken"]
    assert rows["bm25"] == ["bm25 (baseline)", "0.600", "0.876", "5", "—"]
    # significant better / not significant; costs in three significant digits
    assert rows["hybrid"] == ["hybrid", "0.616 ▲", "0.870", "50", "812"]
    assert rows["hybrid[fusion.mode=rrf]"][1:3] == ["0.580 ▼", "0.901 ▲"]
    assert rows["broken"] == ["broken (failed)", "", "", "", ""]
    assert table.count("▲") == 2 + 1 and table.count("▼") == 1 + 1  # the legend names both marks once
    legend = table.splitlines()[-1]
    assert "(Fisher's randomization test, 1000 permutations, Holm's correction, p ≤ 0.05)" in legend
    assert "baseline bm25" in legend and "100 questions" in legend
    assert "Costs (ms/question, context tokens): lower is better." in legend


def test_marks_follow_the_corrected_p_value(result):
    """A p-value under max_p that the correction lifts over it is not marked; both p-values are shown."""
    result.variants[2].compared_to_baseline["Hits@10"] = Comparison(0.0249, 0.03, 0.06, False)
    assert _rows(markdown_table(result))["hybrid[fusion.mode=rrf]"][2] == "0.901"
    assert ["hybrid[fusion.mode=rrf]", "Hits@10", "+0.0249", "0.0300", "0.0600", ""] in _cells(
        significance_table(result)
    )


def test_costs_are_not_marked_as_quality(result):
    """A significant difference in a cost (context tokens) is no ▲ / ▼ in the results table; the test against the
    baseline says whether the cost is lower or higher."""
    result.variants[1].compared_to_baseline["context_tokens"] = Comparison(-100.0, 0.001, 0.002, True)
    result.variants[2].compared_to_baseline["context_tokens"] = Comparison(30.0, 0.001, 0.002, True)
    assert _rows(markdown_table(result))["hybrid"][4] == "812"
    tests = _cells(significance_table(result))
    assert ["hybrid", "context_tokens", "-100.0000", "0.0010", "0.0020", "lower"] in tests
    assert ["hybrid[fusion.mode=rrf]", "context_tokens", "+30.0000", "0.0010", "0.0020", "higher"] in tests


def test_significance_table_lists_every_comparison_with_raw_and_corrected_p_values(result):
    table = significance_table(result)
    assert table.splitlines()[0] == "| variant | metric | delta | p-value | p-value (holm) | significant |"
    assert _cells(table) == [
        ["hybrid", "MRR@10", "+0.0164", "0.0010", "0.0020", "▲"],
        ["hybrid", "Hits@10", "-0.0062", "0.4000", "0.4000", ""],
        ["hybrid[fusion.mode=rrf]", "MRR@10", "-0.0195", "0.0100", "0.0100", "▼"],
        ["hybrid[fusion.mode=rrf]", "Hits@10", "+0.0249", "0.0200", "0.0400", "▲"],
    ]


def test_write_report_writes_every_file(result, tmp_path):
    files = write_report(result, tmp_path / "out")
    assert set(files) == {"json", "per_question", "markdown", "html", "quality_latency", "node_times"}
    for key in ("quality_latency", "node_times"):
        assert files[key].read_bytes().startswith(b"\x89PNG")
    markdown = files["markdown"].read_text()
    assert markdown_table(result) in markdown and "![" in markdown and "(quality_latency.png)" in markdown
    assert significance_table(result) in markdown and "Holm's correction" in markdown
    assert "runs saved by sharing | 2" in markdown and "fusion.top_k is larger" in markdown
    assert "metrics, question by question: per_question.jsonl" in markdown
    page = files["html"].read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "&lt;NoSuchRetriever&gt;" in page and "<NoSuchRetriever>" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?:""", page, re.IGNORECASE)
    assert "<link" not in page and "<script" not in page and "@import" not in page
    assert "0.616 ▲" in page and "bm25 (baseline)" in page


def test_the_report_leads_with_the_results_and_folds_the_details(result, tmp_path):
    """The results table and the quality/cost plot come first; the tests against the baseline show the primary
    metric, every metric's are folded, as are the node timings; the run's settings come last."""
    files = write_report(result, tmp_path)
    page = files["html"].read_text()
    order = [
        "<h1>",
        '<th colspan="2" class="group start">cost (lower is better)</th>',
        '<img alt="primary metric against ms per question"',
        "<h2>Against the baseline</h2>",
        "<details><summary>Every metric against the baseline: 4 tests",
        "<h2>Failed variants</h2>",
        '<img alt="cost per node and variant"',
        "<details><summary>Node timings: 7 nodes",
        "<h2>Run</h2>",
    ]
    assert [page.index(marker) for marker in order] == sorted(page.index(marker) for marker in order)
    assert '<th colspan="1" class="group"></th><th colspan="2" class="group start">quality</th>' in page
    assert '<th class="num">Hits<wbr>@10</th>' in page and '<th class="num start">ms/<wbr>question</th>' in page
    compact = page[page.index("<h2>Against the baseline</h2>") : page.index("<details><summary>Every metric")]
    assert '<th class="num">delta MRR<wbr>@10</th>' in compact and "Hits@10" not in compact
    assert '<tr><td>hybrid</td><td class="num">+0.0164</td><td class="num">0.0010</td>' in compact
    folded = page[page.index("<details><summary>Every metric") : page.index("<h2>Failed variants</h2>")]
    assert folded.count("<td>Hits@10</td>") == 2 and folded.count("<td>MRR@10</td>") == 2
    markdown = files["markdown"].read_text()
    assert "<details><summary>Every metric against the baseline: 4 tests" in markdown
    assert markdown.index("(quality_latency.png)") < markdown.index("## Against the baseline")


def test_results_json_is_the_typed_result_without_per_question_data(result, tmp_path):
    """results.json keeps the fields of the result (the correction and both p-values added) and leaves the
    questions and the variants' per-question results to per_question.jsonl."""
    written = json.loads(write_report(result, tmp_path)["json"].read_text())
    assert written == result.to_json()
    assert list(written) == [
        *("dataset", "split", "n_questions", "index", "baseline", "primary_metric", "significance", "created"),
        *("hopstack_version", "union", "warnings", "variants"),
    ]
    assert written["significance"] == {"test": "fisher", "max_p": 0.05, "n_permutations": 1000, "correction": "holm"}
    assert written["union"]["distinct_nodes"] == 4 and written["union"]["wall_s"] == 12.0
    hybrid = written["variants"][1]
    assert list(hybrid) == [
        *("name", "pipeline", "params", "status", "error", "metrics", "compared_to_baseline", "ms_per_question"),
        *("nodes", "warnings"),
    ]
    assert hybrid["compared_to_baseline"]["Hits@10"] == {
        "delta": -0.0062,
        "p_value": 0.4,
        "p_adjusted": 0.4,
        "significant": False,
    }
    assert hybrid["nodes"]["fusion"] == dataclasses.asdict(result.variants[1].nodes["fusion"])
    assert written["variants"][3] == {
        **dict.fromkeys(("name", "pipeline", "params", "status", "error")),
        **{"name": "broken", "pipeline": "yaml/broken.yaml", "params": {}, "status": "failed", "error": ERROR},
        **{"metrics": {}, "compared_to_baseline": {}, "ms_per_question": None, "nodes": {}, "warnings": []},
    }
    assert result.variants[1].run is not None and result.questions  # to_json left the result as it was


def test_per_question_rows_hold_every_variant_that_ran(result, tmp_path):
    lines = write_report(result, tmp_path)["per_question"].read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows == per_question_rows(result)
    assert [row["id"] for row in rows] == ["q1", "q2"]
    assert rows[0]["question"] == "Who wrote X?" and rows[0]["question_type"] == "inference"
    assert rows[1]["gold_answers"] == ["Rome"] and rows[1]["gold_ids"] == ["d2", "d3"]
    ran = ["bm25", "hybrid", "hybrid[fusion.mode=rrf]"]
    for i, row in enumerate(rows):
        assert list(row["variants"]) == ran  # the failed variant has no per-question results
        for variant in result.variants[:3]:
            own = row["variants"][variant.name]
            assert own["answer"] == variant.run.answers[i]
            assert own["document_ids"] == variant.run.document_ids[i]
            assert own["metrics"] == {m: values[i] for m, values in variant.run.scored.per_query.items()}
    assert rows[1]["variants"]["hybrid[fusion.mode=rrf]"] == {
        "answer": "Rome",
        "document_ids": ["d3", "d2"],
        "metrics": {"MRR@10": 0.0},
    }
    assert rows[0]["variants"]["bm25"]["answer"] is None


def test_write_report_when_every_variant_failed(result, tmp_path):
    failed = result.variants[-1]
    result.variants = [failed, dataclasses.replace(failed, name="bm25")]
    files = write_report(result, tmp_path)
    assert set(files) == {"json", "per_question", "markdown", "html"}
    assert not list(tmp_path.glob("*.png"))
    assert [json.loads(line)["variants"] for line in files["per_question"].read_text().splitlines()] == [{}, {}]
    markdown = files["markdown"].read_text()
    assert "No plot of primary metric against ms per question" in markdown
    assert "No variant could be compared" in markdown and "## Failed variants" in markdown
    assert "data:image/png" not in files["html"].read_text()


def test_write_report_with_one_variant_and_missing_metrics(result, tmp_path):
    only = result.variants[1]
    only.compared_to_baseline, only.nodes = {}, {}
    result.variants, result.baseline = [only], "hybrid"
    files = write_report(result, tmp_path)
    assert set(files) == {"json", "per_question", "markdown", "html", "quality_latency"}
    assert "No plot of cost per node and variant" in files["markdown"].read_text()
    del only.metrics["MRR@10"]
    files = write_report(result, tmp_path / "no-primary")
    assert "quality_latency" not in files
    assert _rows(markdown_table(result))["hybrid"][:2] == ["hybrid (baseline)", "0.870"]


def test_quality_plot_with_crowded_points(result, tmp_path):
    """Labels that cannot be placed without overlaps fall back to numbers with a key; nothing raises."""
    crowded = result.variants[2]
    result.variants += [dataclasses.replace(crowded, name=f"hybrid[fusion.k={k}]") for k in range(30)]
    path = plot_quality_latency(result, tmp_path / "crowded.png")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_write_report_with_optional_fields_of_compare(result, tmp_path):
    """compare() may leave the index and n_permutations out (None), apply no correction (one comparison) and add
    run-level warnings."""
    result.index, result.significance = None, Significance("student", 0.01, None, "none")
    result.warnings = ["baseline 'dense' failed; comparing against 'bm25' instead"]
    markdown = write_report(result, tmp_path)["markdown"].read_text()
    assert "| index | — |" in markdown and "paired Student's t-test, no correction, p ≤ 0.01" in markdown
    assert "p-value (none)" in markdown
    assert "- baseline 'dense' failed" in markdown and "permutations" not in markdown


def test_run_folders_are_new_and_named_after_the_dataset_and_time(tmp_path, monkeypatch):
    monkeypatch.setattr("time.strftime", lambda form: "20261130-091500")
    folders = [new_run_folder(tmp_path / "runs", "scifact/test") for _ in range(3)]
    assert [f.name for f in folders] == [
        "scifact-test-20261130-091500",
        *(f"scifact-test-20261130-091500-{n}" for n in (2, 3)),
    ]
    assert all(f.is_dir() and not any(f.iterdir()) for f in folders)


# MultiHop-RAG's metrics with a reader's: the widest results table hopstack's own datasets give
WIDE_METRICS = ["Hits@10", "Hits@4", "MAP@10", "MRR@10", "AllGold@2", "AllGold@5", "AllGold@10", "AnyGold@2"]
WIDE_METRICS += ["AnyGold@5", "AnyGold@10", "Recall@10", "DocMRR@10", "nDCG@10", "EM", "F1", "Acc", "context_tokens"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_widest_results_table_fits_a_1400_pixel_window(result, tmp_path):
    """17 metrics, each marked significant, grid variants with long names, a failed variant and costs in the
    thousands: Chromium lays the report out in a 1400 x 900 window without scrolling sideways, the page or any
    table."""
    from playwright.sync_api import sync_playwright

    grid = "hybrid-rerank-compselect-reader[fuse.method=zscore,fuse.weights=[0.7, 0.3],rerank.top_k=20]"
    significant = {m: Comparison(0.1, 0.001, 0.002, True) for m in WIDE_METRICS}
    template = dataclasses.replace(result.variants[1], compared_to_baseline=significant, ms_per_question=12345.6)
    template.metrics = {m: 0.6667 if m != "context_tokens" else 12345.6 for m in WIDE_METRICS}
    result.variants[0].metrics = dict(template.metrics)
    result.variants[1:3] = [dataclasses.replace(template, name=f"{grid}#{i}") for i in range(12)]
    page_file = write_report(result, tmp_path)["html"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(page_file.as_uri())
            assert page.evaluate("document.documentElement.scrollWidth") <= 1400
            overflowing = page.evaluate(
                "[...document.querySelectorAll('div.table')].filter(box => box.scrollWidth > box.clientWidth)"
                ".map(box => box.querySelector('th:last-child').textContent)"
            )
            assert overflowing == []
            results = page.locator("div.table").first
            assert results.locator("thead tr").last.locator("th").count() == 1 + len(WIDE_METRICS) + 1
            assert results.bounding_box()["width"] <= 1400
        finally:
            browser.close()
