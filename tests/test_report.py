"""Reports of a pipeline-variant comparison: the Markdown tables, the PNG plots and the self-contained HTML."""

import copy
import json
import re

import pytest

from hopstack.experiments.report import markdown_table, plot_quality_latency, significance_table, write_report

ERROR = "yaml/broken.yaml:3:5: component 'x': unknown type <NoSuchRetriever>"


def _node(type_: str, wall_s: float, shared_with: list[str], cached: bool = False) -> dict:
    return {
        "type": type_,
        "fingerprint": "ab12cd34ef56ab12cd34",
        "wall_s": wall_s,
        "ms_per_question": 1000 * wall_s / 100,
        "cached": cached,
        "shared_with": shared_with,
    }


def _compared(**deltas: tuple[float, float, bool]) -> dict:
    return {m: {"delta": d, "p_value": p, "significant": s} for m, (d, p, s) in deltas.items()}


def _variant(name: str, metrics: dict, compared: dict, ms: float, nodes: dict, warnings=()) -> dict:
    return {
        "name": name,
        "pipeline": f"yaml/{name.split('[')[0]}.yaml",
        "params": {},
        "status": "ok",
        "error": None,
        "metrics": metrics,
        "compared_to_baseline": compared,
        "ms_per_question": ms,
        "nodes": nodes,
        "warnings": list(warnings),
    }


@pytest.fixture
def result() -> dict:
    bm25 = _node("BM25Retriever", 0.5, ["hybrid", "hybrid[fusion.mode=rrf]"])
    dense = _node("DenseRetriever", 4.0, ["hybrid[fusion.mode=rrf]"])
    return {
        "dataset": "multihop-rag",
        "split": "all",
        "n_questions": 100,
        "index": "runs/mhr-index",
        "baseline": "bm25",
        "primary_metric": "MRR@10",
        "significance": {"test": "fisher", "max_p": 0.05, "n_permutations": 1000},
        "created": "2026-11-28T20:00:00+00:00",
        "hopstack_version": "0.1.0",
        "union": {
            "variant_nodes": 6,
            "distinct_nodes": 4,
            "computed_nodes": 3,
            "cached_nodes": 1,
            "wall_s": 12.0,
            "warm_up_s": 2.0,
        },
        "variants": [
            _variant("bm25", {"MRR@10": 0.5996, "Hits@10": 0.8763}, {}, 5.0, {"bm25": bm25}),
            _variant(
                "hybrid",
                {"MRR@10": 0.6160, "Hits@10": 0.8701, "context_tokens": 812.25},
                _compared(**{"MRR@10": (0.0164, 0.001, True), "Hits@10": (-0.0062, 0.4, False)}),
                50.0,
                {"bm25": bm25, "dense": dense, "fusion": _node("DocumentJoiner", 0.01, [], cached=True)},
                warnings=["fusion.top_k is larger than the retrievers' top_k"],
            ),
            _variant(
                "hybrid[fusion.mode=rrf]",
                {"MRR@10": 0.5801, "Hits@10": 0.9012},
                _compared(**{"MRR@10": (-0.0195, 0.01, True), "Hits@10": (0.0249, 0.02, True)}),
                46.0,
                {"bm25": bm25, "dense": dense, "fusion": _node("DocumentJoiner", 0.02, [])},
            ),
            {
                "name": "broken",
                "pipeline": "yaml/broken.yaml",
                "params": {},
                "status": "failed",
                "error": ERROR,
                "metrics": {},
                "compared_to_baseline": {},
                "ms_per_question": None,
                "nodes": {},
                "warnings": [],
            },
        ],
    }


def _cells(table: str) -> list[list[str]]:
    """The cells of a Markdown table's body rows."""
    lines = [line for line in table.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]


def _rows(table: str) -> dict[str, list[str]]:
    """The table's body rows by variant name (the first cell without its baseline mark)."""
    return {row[0].removesuffix(" (baseline)"): row for row in _cells(table)}


def test_markdown_table_marks_significant_differences_and_the_baseline(result):
    table = markdown_table(result)
    header = table.splitlines()[0]
    assert header == "| variant | MRR@10 | Hits@10 | context_tokens | ms/question | status |"
    rows = _rows(table)
    assert list(rows) == ["bm25", "hybrid", "hybrid[fusion.mode=rrf]", "broken"]
    assert rows["bm25"] == ["bm25 (baseline)", "0.5996", "0.8763", "—", "5.00", "ok"]
    # significant better / not significant / context_tokens with one decimal
    assert rows["hybrid"] == ["hybrid", "0.6160 ▲", "0.8701", "812.2", "50.00", "ok"]
    assert rows["hybrid[fusion.mode=rrf]"][1:3] == ["0.5801 ▼", "0.9012 ▲"]
    assert rows["broken"] == ["broken", "", "", "", "", "failed"]
    assert table.count("▲") == 2 + 1 and table.count("▼") == 1 + 1  # the legend names both marks once
    assert "Fisher's randomization test" in table and "0.05" in table and "bm25" in table.splitlines()[-1]
    assert "100 questions" in table


def test_lower_is_better_metrics_invert_the_marks(result):
    result["variants"][1]["compared_to_baseline"]["context_tokens"] = {
        "delta": -100.0,
        "p_value": 0.001,
        "significant": True,
    }
    assert _rows(markdown_table(result))["hybrid"][3] == "812.2 ▲"


def test_significance_table_lists_every_comparison(result):
    assert _cells(significance_table(result)) == [
        ["hybrid", "MRR@10", "+0.0164", "0.0010", "▲"],
        ["hybrid", "Hits@10", "-0.0062", "0.4000", ""],
        ["hybrid[fusion.mode=rrf]", "MRR@10", "-0.0195", "0.0100", "▼"],
        ["hybrid[fusion.mode=rrf]", "Hits@10", "+0.0249", "0.0200", "▲"],
    ]


def test_write_report_writes_every_file(result, tmp_path):
    files = write_report(result, tmp_path / "out")
    assert set(files) == {"json", "markdown", "html", "quality_latency", "node_times"}
    assert json.loads(files["json"].read_text()) == result
    for key in ("quality_latency", "node_times"):
        assert files[key].read_bytes().startswith(b"\x89PNG")
    markdown = files["markdown"].read_text()
    assert markdown_table(result) in markdown and "![" in markdown and "(quality_latency.png)" in markdown
    assert "runs saved by sharing | 2" in markdown and "fusion.top_k is larger" in markdown
    page = files["html"].read_text()
    assert page.count("data:image/png;base64,") == 2
    assert "&lt;NoSuchRetriever&gt;" in page and "<NoSuchRetriever>" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*https?:""", page, re.IGNORECASE)
    assert "<link" not in page and "<script" not in page and "@import" not in page
    assert "0.6160 ▲" in page and "bm25 (baseline)" in page


def test_write_report_when_every_variant_failed(result, tmp_path):
    failed = result["variants"][-1]
    result["variants"] = [copy.deepcopy(failed), {**copy.deepcopy(failed), "name": "bm25"}]
    files = write_report(result, tmp_path)
    assert set(files) == {"json", "markdown", "html"}
    assert not list(tmp_path.glob("*.png"))
    markdown = files["markdown"].read_text()
    assert "No plot of primary metric against ms per question" in markdown
    assert "No variant could be compared" in markdown and "## Failed variants" in markdown
    assert "data:image/png" not in files["html"].read_text()


def test_write_report_with_one_variant_and_missing_metrics(result, tmp_path):
    only = result["variants"][1]
    only["compared_to_baseline"], only["nodes"] = {}, {}
    result["variants"], result["baseline"] = [only], "hybrid"
    files = write_report(result, tmp_path)
    assert set(files) == {"json", "markdown", "html", "quality_latency"}
    assert "No plot of wall time per node and variant" in files["markdown"].read_text()
    del only["metrics"]["MRR@10"]
    files = write_report(result, tmp_path / "no-primary")
    assert "quality_latency" not in files
    assert _rows(markdown_table(result))["hybrid"][:2] == ["hybrid (baseline)", "0.8701"]


def test_quality_plot_with_crowded_points(result, tmp_path):
    """Labels that cannot be placed without overlaps fall back to numbers with a key; nothing raises."""
    crowded = result["variants"][2]
    result["variants"] += [{**crowded, "name": f"hybrid[fusion.k={k}]"} for k in range(30)]
    path = plot_quality_latency(result, tmp_path / "crowded.png")
    assert path.read_bytes().startswith(b"\x89PNG")


def test_write_report_with_optional_fields_of_compare(result, tmp_path):
    """compare() may leave the index and n_permutations out (None) and adds run-level warnings."""
    result["index"], result["significance"] = None, {"test": "student", "max_p": 0.01, "n_permutations": None}
    result["warnings"] = ["baseline 'dense' failed; comparing against 'bm25' instead"]
    markdown = write_report(result, tmp_path)["markdown"].read_text()
    assert "| index | — |" in markdown and "paired Student's t-test, p ≤ 0.01" in markdown
    assert "- baseline 'dense' failed" in markdown and "permutations" not in markdown
