"""Train/test splits: disjoint, covering, deterministic, and the same on every call."""

import json

import pytest

from conftest import REPO, SHARED_DATA
from hopstack.datasets.base import HASH_TRAIN_SHARE, in_hash_train
from hopstack.datasets.benchmark import load_dataset
from hopstack.errors import HopstackInputError

SAMPLE = REPO / "hopstack" / "data" / "sample"


def _ids(dataset: str, split: str) -> list[str]:
    return [q.id for q in load_dataset(dataset, split).questions]


def _assert_partition(dataset: str) -> tuple[list[str], list[str]]:
    train, test = _ids(dataset, "train"), _ids(dataset, "test")
    assert train and test and not set(train) & set(test)
    assert (train, test) == (_ids(dataset, "train"), _ids(dataset, "test"))  # deterministic
    assert _ids(dataset, "dev") == train  # the former name
    return train, test


def test_a_generic_set_splits_by_a_hash_of_the_question_id():
    train, test = _assert_partition(str(SAMPLE))
    assert sorted(train + test) == sorted(_ids(str(SAMPLE), "all"))
    assert all(in_hash_train(i) for i in train) and not any(in_hash_train(i) for i in test)


def test_the_hash_split_depends_on_the_id_only_and_takes_about_30_percent():
    ids = [f"question-{i}" for i in range(4000)]
    share = sum(map(in_hash_train, ids)) / len(ids)
    assert abs(share - HASH_TRAIN_SHARE) < 0.03
    # pinned: a change of the rule would silently move questions between train and test
    assert [i for i in ("q01", "q02", "q03", "q04", "q05", "q06", "q07", "q08") if in_hash_train(i)] == ["q05", "q08"]


def test_a_beir_set_with_train_and_test_qrels_reads_each_split_from_its_file(tmp_path):
    (tmp_path / "qrels").mkdir()
    corpus = [{"_id": f"d{i}", "title": "", "text": f"document {i}"} for i in range(4)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(4)]
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (tmp_path / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\td1\t1\n")
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq2\td2\t1\nq3\td3\t1\n")
    assert _assert_partition(str(tmp_path)) == (["q0", "q1"], ["q2", "q3"])
    assert _ids(str(tmp_path / "qrels" / "train.tsv"), "test") == ["q2", "q3"]  # the split, not the file given


def test_an_unknown_split_is_refused():
    with pytest.raises(HopstackInputError, match="split must be one of all, train, test, dev"):
        load_dataset(str(SAMPLE), "validation")


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no benchmark data (set $HOPSTACK_DATA)")
@pytest.mark.parametrize(
    ("dataset", "sizes"),
    [("multihop-rag", (451, 1804)), ("scifact", (809, 300)), ("2wikimultihopqa", (197, 460))],
)
def test_the_benchmarks_splits_are_disjoint_and_fixed(dataset, sizes):
    train, test = _assert_partition(dataset)
    assert (len(train), len(test)) == sizes
    if dataset == "multihop-rag":
        assert train[:2] == ["q0000", "q0005"]
