"""MultiHop-RAG loading, dataset names, and `hopstack eval` end to end on the real data."""

import json

import pytest

from conftest import SHARED_DATA, YAML_DIR
from hopstack.datasets.multihop_rag import load_queries
from hopstack.datasets.registry import dataset_corpus, resolve_dataset
from hopstack.errors import HopstackInputError
from hopstack.pipelines.evaluation import split_items

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data is not beside the repository")


@needs_data
def test_multihop_rag_queries_leave_out_null_queries():
    queries = load_queries(SHARED_DATA / "multihop_rag")
    assert len(queries) == 2255
    assert len(load_queries(SHARED_DATA / "multihop_rag", include_null=True)) == 2556
    assert all(q.facts for q in queries) and queries[0].id == "q0000"


def test_splits_partition_the_questions():
    items = list(range(23))
    dev, test = split_items(items, "dev"), split_items(items, "test")
    assert dev == [0, 5, 10, 15, 20] and sorted(dev + test) == items
    with pytest.raises(HopstackInputError, match="split must be one of"):
        split_items(items, "train")


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
    assert set(result) >= {"pipeline", "dataset", "n_questions", "metrics", "timings"}
    assert result["pipeline"] == "bm25" and result["dataset"] == "multihop-rag" and result["n_questions"] == 200
    assert set(result["metrics"]) == {"MRR@10", "MAP@10", "Hits@10", "Hits@4"}
    # measured on all 2,255 queries: MRR@10 0.60, Hits@10 0.88; the first 200 land near that
    assert 0.45 < result["metrics"]["MRR@10"] < 0.75 and result["metrics"]["Hits@10"] > 0.75
    assert "MRR@10" in printed
