"""MultiHop-RAG loading, dataset names, and `hopstack eval` end to end on the sample and the real data."""

import json

import pytest

from conftest import SHARED_DATA, YAML_DIR
from hopstack.datasets.benchmark import dataset_corpus
from hopstack.datasets.multihop_rag import load_queries
from hopstack.datasets.registry import resolve_dataset
from hopstack.errors import HopstackInputError
from hopstack.experiments.evaluation import corpus_mismatch, split_items
from hopstack.experiments.metrics import DOCUMENT_METRICS

RESULT_KEYS = {"pipeline", "dataset", "split", "n_questions", "metrics", "timings", "warnings"}

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no benchmark data (set $HOPSTACK_DATA)")


@needs_data
def test_multihop_rag_queries_leave_out_null_queries():
    queries = load_queries(SHARED_DATA / "multihop_rag")
    assert len(queries) == 2255
    assert len(load_queries(SHARED_DATA / "multihop_rag", include_null=True)) == 2556
    assert all(q.facts for q in queries) and queries[0].id == "q0000"


def test_splits_partition_the_questions():
    items = list(range(23))
    train, test = split_items(items, "train"), split_items(items, "test")
    assert train == split_items(items, "dev") == [0, 5, 10, 15, 20] and sorted(train + test) == items
    with pytest.raises(HopstackInputError, match="split must be one of"):
        split_items(items, "validation")


@needs_data
def test_dataset_names_and_folders_resolve(monkeypatch, tmp_path):
    assert resolve_dataset("multihop-rag")[1] == SHARED_DATA / "multihop_rag"
    assert resolve_dataset(str(SHARED_DATA / "scifact"))[0] == "scifact"
    assert dataset_corpus("2wikimultihopqa").name == "2wiki_dev_subset.json"
    with pytest.raises(HopstackInputError, match="unknown dataset 'nq'"):
        resolve_dataset("nq")
    monkeypatch.setenv("HOPSTACK_DATA", str(tmp_path))
    with pytest.raises(HopstackInputError, match="not found at"):
        resolve_dataset("multihop-rag")


@needs_data
@pytest.mark.slow
def test_eval_command_on_a_bm25_index_of_multihop_rag(cli, tmp_path):
    index = tmp_path / "mhr"
    code, _, err = cli("index", "--dataset", "multihop-rag", "--out", index, "--no-dense")
    assert code == 0, err
    out = tmp_path / "eval.json"
    code, printed, err = cli(
        "eval", YAML_DIR / "bm25.yaml", "--dataset", "multihop-rag", "--index", index, "--limit", "200", "--json", out
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    assert set(result) == RESULT_KEYS and result["warnings"] == []
    assert result["pipeline"] == "bm25" and result["dataset"] == "multihop-rag" and result["n_questions"] == 200
    official = ["Hits@10", "Hits@4", "MAP@10", "MRR@10"]
    documents = [key.replace("MRR@10", "DocMRR@10") for key in DOCUMENT_METRICS]
    assert list(result["metrics"]) == [*official, *documents, "context_tokens"]
    # measured on all 2,255 queries: MRR@10 0.60, Hits@10 0.88; the first 200 land near that
    assert 0.45 < result["metrics"]["MRR@10"] < 0.75 and result["metrics"]["Hits@10"] > 0.75
    assert "MRR@10" in printed


def test_eval_command_on_the_sample_dataset(cli, tmp_path, sample_corpus):
    out = tmp_path / "eval.json"
    sample = sample_corpus.parent
    code, printed, err = cli(
        "eval", YAML_DIR / "bm25.yaml", "--dataset", sample, "--index", sample_corpus, "--json", out
    )
    assert code == 0, err
    result = json.loads(out.read_text())
    assert set(result) == RESULT_KEYS and result["warnings"] == [] and "warning" not in err
    # stderr is no terminal here: the steps are printed as they start, each node when it has run every question
    n = result["n_questions"]
    assert err.splitlines()[-3:] == [f"running {n} question(s)", f"  bm25 {n}/{n}", "scoring"]
    assert (result["pipeline"], result["dataset"], result["split"], result["n_questions"]) == (
        "bm25",
        "sample",
        "all",
        66,
    )
    assert list(result["metrics"]) == [*DOCUMENT_METRICS, "context_tokens"]
    assert result["metrics"]["AnyGold@10"] > 0.9 and result["metrics"]["context_tokens"] > 0
    node = result["timings"]["nodes"]["bm25"]
    assert node["ms_per_question"] == pytest.approx(1000 * (node["wall_s"] + node["call_cached_s"]) / 66)
    assert "AllGold@2" in printed and "ms/question" in printed


def test_eval_warns_when_the_index_was_built_from_another_corpus(cli, tmp_path, sample_corpus):
    other = tmp_path / "other.jsonl"
    other.write_text(sample_corpus.read_text(encoding="utf-8").replace("Brannock", "Brennock"), encoding="utf-8")
    out = tmp_path / "eval.json"
    code, _, err = cli(
        "eval",
        YAML_DIR / "bm25.yaml",
        "--dataset",
        sample_corpus.parent,
        "--index",
        other,
        "--limit",
        "3",
        "--json",
        out,
    )
    assert code == 0 and "warning: the index" in err and "was built from another corpus" in err
    assert json.loads(out.read_text())["warnings"][0].startswith(f"the index {other} was built from another corpus")


@needs_data
@pytest.mark.parametrize(
    ("dataset", "corpus", "answers"),
    [("scifact", "scifact/corpus.jsonl", False), ("2wikimultihopqa", "2wikimultihopqa/2wiki_dev_subset.json", True)],
)
def test_eval_command_on_scifact_and_2wiki(cli, tmp_path, dataset, corpus, answers):
    out = tmp_path / "eval.json"
    code, _, err = cli(
        "eval", YAML_DIR / "bm25.yaml", "--dataset", dataset, "--index", SHARED_DATA / corpus,
        "--split", "dev", "--limit", "40", "--json", out,
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(out.read_text())
    assert (result["dataset"], result["split"], result["n_questions"], result["warnings"]) == (dataset, "dev", 40, [])
    assert list(result["metrics"]) == [*DOCUMENT_METRICS, "context_tokens"]  # bm25 gives no answer to score
    assert 0.3 < result["metrics"]["nDCG@10"] < 1 and result["metrics"]["AnyGold@10"] > 0.6


def test_index_command_takes_a_dataset_folder_and_eval_checks_its_manifest(cli, tmp_path, sample_corpus):
    index = tmp_path / "index"
    code, _, err = cli("index", "--dataset", sample_corpus.parent, "--out", index, "--no-dense")
    assert code == 0 and "indexed 185 documents" in err
    assert corpus_mismatch(index, sample_corpus) is None
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": "x", "text": "x"}\n', encoding="utf-8")
    assert "was built from another corpus" in corpus_mismatch(index, other)
