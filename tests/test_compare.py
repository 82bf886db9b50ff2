"""``hopstack compare`` and ``hopstack demo``: union runs, cache, failures kept apart, significance, report."""

import json

import numpy as np
import pytest

from hopstack.datasets.benchmark import load_dataset
from hopstack.demo import SAMPLE_CORPUS, SAMPLE_DIR
from hopstack.experiments.compare import significance
from hopstack.experiments.metrics import ScoredRun
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
        assert significance(baseline, same, test)["MRR@10"] == {"delta": 0.0, "p_value": 1.0, "significant": False}
        result = significance(baseline, better, test)
        assert result["MRR@10"]["significant"] and result["MRR@10"]["delta"] == pytest.approx(0.325)
        assert result["MRR@10"]["p_value"] < 0.01
        assert not result["context_tokens"]["significant"]  # +1/-1 around the same mean


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
    assert len(load_dataset(str(SAMPLE_DIR)).questions) == compared["n_questions"] == 24


def test_compare_refuses_an_unknown_baseline(cli, tmp_path):
    args = ["--dataset", SAMPLE_DIR, "--index", SAMPLE_CORPUS, "--no-cache", "--out", tmp_path / "r"]
    code, _, err = cli("compare", YAML_DIR / "bm25.yaml", *args, "--baseline", "nope")
    assert code == 2 and "baseline 'nope' is not a variant: bm25" in err


@pytest.mark.slow
def test_demo_compares_the_shipped_pipelines(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("HOPSTACK_MULTIHOP_RAG", raising=False)
    json_out = tmp_path / "demo.json"
    code, out, err = cli("demo", "--out", tmp_path / "demo", "--json", json_out)
    assert code == 0, err
    result = json.loads(json_out.read_text())
    assert {v["name"] for v in result["variants"]} >= {"bm25", "dense", "hybrid", "hybrid-rrf"}
    assert result["n_questions"] == 24 and result["baseline"] == "bm25"
    for variant in result["variants"]:
        # measured on the shipped sample: every pipeline has all gold documents in its top 5 for most questions
        assert variant["status"] == "ok" and variant["metrics"]["AllGold@5"] > 0.5, variant
    assert "| hybrid |" in out and f"report: {tmp_path / 'demo' / 'report.html'}" in out


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


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not beside the repository")
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
