"""``hopstack compare`` and ``hopstack demo``: union runs, cache, failures kept apart, significance, report."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from hopstack.datasets.benchmark import load_dataset
from hopstack.demo import SAMPLE_CORPUS, SAMPLE_DIR
from hopstack.errors import HopstackInputError
from hopstack.experiments.compare import Comparison, adjust_p_values, apply_correction, compare, significance
from hopstack.experiments.metrics import ScoredRun
from hopstack.experiments.report import write_report
from hopstack.experiments.variants import read_grid
from tests.conftest import SHARED_DATA, YAML_DIR

GRID = """
parameters:
  fuse.method: [rrf, zscore]
"""


def _run(values: dict[str, list[float]]) -> ScoredRun:
    n = len(next(iter(values.values())))
    return ScoredRun([f"q{i}" for i in range(n)], values, {k: sum(v) / n for k, v in values.items()}, [])


def test_significance_finds_a_real_difference_and_not_a_null_one():
    baseline = _run({"MRR@10": [0.5, 0.2, 1.0, 0.0] * 25, "context_tokens": [100.0] * 100})
    same = _run({"MRR@10": [0.5, 0.2, 1.0, 0.0] * 25, "context_tokens": [100.0] * 100})
    better = _run({"MRR@10": [1.0, 0.5, 1.0, 0.5] * 25, "context_tokens": [101.0, 99.0] * 50})
    for test in ("fisher", "student"):
        assert significance(baseline, same, test)["MRR@10"] == Comparison(0.0, 1.0, 1.0, False)
        result = significance(baseline, better, test)
        assert result["MRR@10"].significant and result["MRR@10"].delta == pytest.approx(0.325)
        assert result["MRR@10"].p_value < 0.01 and result["MRR@10"].p_adjusted == result["MRR@10"].p_value
        assert not result["context_tokens"].significant  # +1/-1 around the same mean


def test_holm_and_bonferroni_against_hand_computed_values():
    p_values = [0.01, 0.04, 0.03, 0.005]
    # Bonferroni: each times m = 4
    assert adjust_p_values(p_values, "bonferroni") == pytest.approx([0.04, 0.16, 0.12, 0.02])
    # Holm, by rank: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> 0.06 (running maximum)
    assert adjust_p_values(p_values, "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_p_values([0.3, 0.6, 0.2], "holm") == pytest.approx([0.6, 0.6, 0.6])  # 0.6, 0.6 (0.6 x 1), 0.6
    assert adjust_p_values([0.5, 0.6], "bonferroni") == [1.0, 1.0] == adjust_p_values([0.5, 0.6], "holm")  # capped
    assert adjust_p_values(p_values, "none") == p_values
    assert adjust_p_values([0.02], "holm") == adjust_p_values([0.02], "bonferroni") == [0.02]
    with pytest.raises(HopstackInputError, match="correction must be one of none, holm, bonferroni, got 'bh'"):
        adjust_p_values(p_values, "bh")


def test_correction_is_per_metric_over_the_variants_and_decides_significance():
    def raw(p_value: float) -> Comparison:
        return Comparison(0.1, p_value, p_value, p_value <= 0.05)

    comparisons = {
        "a": {"MRR@10": raw(0.01), "F1": raw(0.04)},
        "b": {"MRR@10": raw(0.04), "F1": raw(0.5)},
        "c": {"MRR@10": raw(0.03)},  # no F1: F1's family is a and b
    }
    apply_correction(comparisons, "holm", 0.05)
    # MRR@10: 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 -> 0.06; F1: 0.04 x 2 = 0.08, 0.5 x 1 = 0.5
    adjusted = {(name, m): c.p_adjusted for name, tests in comparisons.items() for m, c in tests.items()}
    assert adjusted == pytest.approx(
        {("a", "MRR@10"): 0.03, ("a", "F1"): 0.08, ("b", "MRR@10"): 0.06, ("b", "F1"): 0.5, ("c", "MRR@10"): 0.06}
    )
    assert comparisons["a"]["MRR@10"].significant and not comparisons["c"]["MRR@10"].significant
    assert not comparisons["a"]["F1"].significant and comparisons["a"]["F1"].p_value == 0.04  # the raw one is kept


@pytest.mark.slow
def test_compare_runs_variants_as_one_union_keeps_failures_apart_and_caches(cli, write_yaml, tmp_path):
    grid = write_yaml(GRID, name="grid.yaml")
    broken = write_yaml(
        """
        components:
          bm25:
            type: hopstack.components.retrieval.BM25Retrievr
        connections: []
        """,
        name="broken.yaml",
    )
    bad_model = write_yaml(
        (YAML_DIR / "dense.yaml").read_text().replace("model: minilm", "model: /no/such/model"), name="bad-model.yaml"
    )
    args = [YAML_DIR / "bm25.yaml", YAML_DIR / "hybrid.yaml", broken, bad_model, "--grid", grid]
    args += ["--dataset", SAMPLE_DIR, "--index", SAMPLE_CORPUS, "--cache", tmp_path / "nodes.sqlite"]
    code, out, err = cli("compare", *args, "--out", tmp_path / "report", "--json", tmp_path / "first.json")
    assert code == 1  # some variants failed; the others' results are all there
    result = json.loads((tmp_path / "first.json").read_text())
    status = {v["name"]: v["status"] for v in result["variants"]}
    assert status == {
        "bm25": "ok",
        "hybrid[fuse.method=rrf]": "ok",
        "hybrid[fuse.method=zscore]": "ok",
        "broken": "failed",
        "bad-model": "failed",
    }
    errors = {v["name"]: v["error"] for v in result["variants"]}
    assert "broken.yaml:3:11: component 'bm25'" in errors["broken"] and "BM25Retriever" in errors["broken"]
    assert "component 'dense'" in errors["bad-model"] and "/no/such/model" in errors["bad-model"]
    assert "variant broken failed" in err and "variant bad-model failed" in err
    # the two hybrids share both retrievers: 2 x 3 + 1 variant nodes, 5 distinct
    assert (result["union"]["variant_nodes"], result["union"]["distinct_nodes"]) == (7, 5)
    hybrid = next(v for v in result["variants"] if v["name"] == "hybrid[fuse.method=rrf]")
    assert hybrid["nodes"]["dense"]["shared_with"] == ["hybrid[fuse.method=zscore]"]
    assert set(hybrid["compared_to_baseline"]) >= {"MRR@10", "AllGold@2", "nDCG@10"}
    for key in ("AllGold@2", "AllGold@5", "AllGold@10", "AnyGold@2", "Recall@10", "MRR@10", "nDCG@10"):
        assert key in hybrid["metrics"] and key in out
    assert {p.name for p in (tmp_path / "report").iterdir()} >= {
        "report.html",
        "report.md",
        "results.json",
        "quality_latency.png",
        "node_times.png",
    }
    code, _, _ = cli("compare", *args, "--out", tmp_path / "again", "--json", tmp_path / "second.json")
    again = json.loads((tmp_path / "second.json").read_text())
    assert code == 1 and again["union"]["computed_nodes"] == 0 and again["union"]["cached_nodes"] == 5
    assert [v["metrics"] for v in again["variants"]] == [v["metrics"] for v in result["variants"]]
    # cached nodes, and those not even read because what they feed was cached, still report their cost
    for before, after in zip(result["variants"][:3], again["variants"][:3]):
        assert after["ms_per_question"] == pytest.approx(before["ms_per_question"]), after["name"]
        assert all(node["cached"] for node in after["nodes"].values())


def test_compare_scores_a_variant_exactly_as_eval_does(cli, tmp_path):
    args = ["--dataset", SAMPLE_DIR, "--index", SAMPLE_CORPUS]
    code, _, err = cli("eval", YAML_DIR / "bm25.yaml", *args, "--json", tmp_path / "eval.json")
    assert code == 0, err
    code, _, err = cli("compare", YAML_DIR / "bm25.yaml", *args, "--no-cache", "--out", tmp_path / "r")
    assert code == 0, err
    compared = json.loads((tmp_path / "r" / "results.json").read_text())
    assert compared["variants"][0]["metrics"] == json.loads((tmp_path / "eval.json").read_text())["metrics"]
    assert len(load_dataset(str(SAMPLE_DIR)).questions) == compared["n_questions"] == 66


def test_compare_refuses_an_unknown_baseline(cli, tmp_path):
    args = ["--dataset", SAMPLE_DIR, "--index", SAMPLE_CORPUS, "--no-cache", "--out", tmp_path / "r"]
    code, _, err = cli("compare", YAML_DIR / "bm25.yaml", *args, "--baseline", "nope")
    assert code == 2 and "baseline 'nope' is not a variant: bm25" in err


def test_compare_refuses_an_unknown_correction(cli, tmp_path):
    args = ["--dataset", SAMPLE_DIR, "--index", SAMPLE_CORPUS, "--no-cache", "--out", tmp_path / "r"]
    code, _, err = cli("compare", YAML_DIR / "bm25.yaml", *args, "--correction", "fdr")
    assert code == 2 and "correction must be one of none, holm, bonferroni, got 'fdr'" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("k1s", "correction", "applied"),
    [((0.3, 1.5, 3.0), None, "holm"), ((0.3, 1.5), None, "none"), ((0.3, 1.5, 3.0), "bonferroni", "bonferroni")],
)
def test_compare_corrects_the_p_values_holm_by_default_with_several_comparisons(
    write_yaml, tmp_path, k1s, correction, applied
):
    grid = read_grid(write_yaml(f"parameters:\n  bm25.k1: {list(k1s)}\n", name="grid.yaml"))
    kwargs = {"correction": correction} if correction else {}
    result = compare([YAML_DIR / "bm25.yaml"], str(SAMPLE_DIR), SAMPLE_CORPUS, grid=grid, test="student", **kwargs)
    assert result.significance.correction == applied
    others = result.variants[1:]
    assert len(others) == len(k1s) - 1 and all(v.status == "ok" for v in result.variants)
    assert result.variants[0].compared_to_baseline == {}
    for metric in others[0].compared_to_baseline:
        tests = [v.compared_to_baseline[metric] for v in others]
        expected = adjust_p_values([t.p_value for t in tests], applied)
        assert [t.p_adjusted for t in tests] == pytest.approx(expected), metric
        assert [t.significant for t in tests] == [p <= 0.05 for p in expected]
    adjusted = [t for v in others for t in v.compared_to_baseline.values() if t.p_value < 1]
    assert adjusted and (applied == "none") == all(t.p_adjusted == t.p_value for t in adjusted)


def test_per_question_file_matches_every_variants_scored_run(write_yaml, tmp_path):
    grid = read_grid(write_yaml("parameters:\n  bm25.k1: [0.3, 1.5]\n", name="grid.yaml"))
    result = compare([YAML_DIR / "bm25.yaml"], str(SAMPLE_DIR), SAMPLE_CORPUS, grid=grid)
    files = write_report(result, tmp_path)
    rows = [json.loads(line) for line in files["per_question"].read_text(encoding="utf-8").splitlines()]
    questions = load_dataset(str(SAMPLE_DIR)).questions
    assert [row["id"] for row in rows] == [q.id for q in questions] == result.variants[0].run.scored.question_ids
    assert [(row["question"], row["gold_answers"], row["gold_ids"]) for row in rows] == [
        (q.question, q.answers, q.gold_ids) for q in questions
    ]
    names = ["bm25[bm25.k1=0.3]", "bm25[bm25.k1=1.5]"]
    assert [v.name for v in result.variants] == names
    for i, row in enumerate(rows):
        assert list(row["variants"]) == names
        for variant in result.variants:
            own, scored = row["variants"][variant.name], variant.run.scored
            assert own["metrics"] == {metric: values[i] for metric, values in scored.per_query.items()}
            assert own["answer"] is None  # a retrieval pipeline gives no answer
            # the document ids are those the metrics scored
            assert 0 < len(own["document_ids"]) <= 10
            assert own["metrics"]["AnyGold@10"] == float(bool(set(own["document_ids"]) & set(row["gold_ids"])))
    for variant in result.variants:
        scores = [row["variants"][variant.name]["metrics"] for row in rows]
        assert {m: sum(q[m] for q in scores) / len(rows) for m in variant.metrics} == pytest.approx(variant.metrics)
    assert any(rows[i]["variants"][names[0]] != rows[i]["variants"][names[1]] for i in range(len(rows)))


@pytest.mark.slow
def test_demo_compares_the_shipped_pipelines(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("HOPSTACK_MULTIHOP_RAG", raising=False)
    json_out = tmp_path / "demo.json"
    code, out, err = cli("demo", "--out", tmp_path / "demo", "--json", json_out)
    assert code == 0, err
    result = json.loads(json_out.read_text())
    assert {v["name"] for v in result["variants"]} >= {"bm25", "dense", "hybrid", "hybrid-rrf"}
    assert result["n_questions"] == 66 and result["baseline"] == "bm25"
    assert all(variant["status"] == "ok" for variant in result["variants"])
    # the sample tells the pipelines apart (docs/getting-started.md): none has every gold document in its top 5,
    # and their MRR@10 and AllGold@5 spread over more than 5 points (measured: 8.6 and 9.1)
    metrics = [variant["metrics"] for variant in result["variants"]]
    assert all(0.5 < m["AllGold@5"] < 1 for m in metrics), metrics
    for name in ("MRR@10", "AllGold@5"):
        assert max(m[name] for m in metrics) - min(m[name] for m in metrics) > 0.05, name
    assert "| hybrid |" in out and f"report: {tmp_path / 'demo' / 'report.html'}" in out


def test_each_demo_run_writes_its_own_report_folder(cli, tmp_path, monkeypatch):
    """Without --out, every run gets a new folder runs/demo/<dataset>-<time> (another dataset's or another run's
    report is never replaced) and says where; stderr (no terminal here) has the steps and no bar."""
    monkeypatch.delenv("HOPSTACK_MULTIHOP_RAG", raising=False)
    monkeypatch.chdir(tmp_path)
    reports = []
    for _ in range(2):
        code, out, err = cli("demo", "--pipeline", YAML_DIR / "bm25.yaml", "--limit", 3)
        assert code == 0, err
        reports.append(Path(re.search(r"^report: (\S+)", out, re.MULTILINE).group(1)))
        assert err.splitlines() == [
            "loading sample and the pipelines",
            "running 1 variant(s) as 1 distinct node(s)",
            "  bm25 3/3",
            "scoring",
            "writing the report",
        ]
    assert reports[0] != reports[1] and all(report.is_file() for report in reports)
    assert [report.parent.parent for report in reports] == [Path("runs/demo")] * 2
    assert all(re.fullmatch(r"sample-\d{8}-\d{6}(-2)?", report.parent.name) for report in reports)


def test_randomization_test_agrees_with_scipys_permutation_test():
    from scipy import stats

    from hopstack.experiments.compare import randomization_p_value

    rng = np.random.default_rng(0)
    control = rng.random(60)
    for shift in (0.0, 0.05, 0.1, 0.3):
        treatment = np.clip(control + shift + rng.normal(0, 0.3, 60), 0, 1)
        ours = randomization_p_value(control, treatment, 4000)
        scipys = stats.permutation_test(
            (treatment, control),
            lambda x, y, axis: np.mean(x - y, axis=axis),
            permutation_type="samples",
            n_resamples=4000,
            rng=np.random.default_rng(1),
        ).pvalue
        assert abs(ours - scipys) < 0.03, (shift, ours, scipys)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no benchmark data (set $HOPSTACK_DATA)")
def test_compare_on_real_multihop_rag_questions(cli, write_yaml, tmp_path):
    """A BM25 grid over MultiHop-RAG's articles (indexed in memory, one document per article) on the first
    200 questions: the official metrics, every variant scored, a significant difference found."""
    grid = write_yaml("parameters:\n  bm25.k1: [0.1, 1.2]\n  bm25.b: [0.0, 0.75]\n", name="grid.yaml")
    corpus = SHARED_DATA / "multihop_rag" / "corpus.json"
    args = ["--dataset", "multihop-rag", "--index", corpus, "--limit", 200, "--grid", grid, "--no-cache"]
    args += ["--out", tmp_path / "r", "--json", tmp_path / "r.json"]
    code, _, err = cli("compare", YAML_DIR / "bm25.yaml", *args)
    assert code == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["n_questions"] == 200 and len(result["variants"]) == 4
    assert result["union"]["distinct_nodes"] == 4  # no two grid points share a node
    for variant in result["variants"]:
        assert {"Hits@10", "Hits@4", "MAP@10", "MRR@10", "DocMRR@10", "AllGold@2", "nDCG@10"} <= set(variant["metrics"])
        assert 0.3 < variant["metrics"]["Hits@10"] <= 1.0, variant
    # k1 = 0.1 nearly ignores term frequency: the default k1 = 1.2, b = 0.75 ranks articles better
    best = next(v for v in result["variants"] if v["name"] == "bm25[bm25.k1=1.2,bm25.b=0.75]")
    assert best["compared_to_baseline"]["DocMRR@10"]["delta"] > 0
    assert any(c["significant"] for v in result["variants"] for c in v["compared_to_baseline"].values())
