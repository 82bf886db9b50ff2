"""The on-disk node cache and the union of pipeline variants (docs/concepts/caching.md)."""

import json
import math
import os
import pickle
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from haystack import Document, Pipeline, component

from hopstack.errors import HopstackInputError
from hopstack.experiments.variants import expand_variants, read_grid
from hopstack.graphs.node_cache import NodeCache
from hopstack.graphs.runner import BatchRunner
from hopstack.graphs.union import build_union
from hopstack.spec.loading import load_pipeline_data
from tests.conftest import YAML_DIR


def _docs(outputs: dict) -> list[tuple]:
    """Everything a caller sees of the documents in one item's outputs."""
    return [
        (node, d.id, d.content, d.score, d.meta)
        for node, sockets in sorted(outputs.items())
        for d in sockets.get("documents", [])
    ]


def _bm25_data(corpus: Path, top_k: int = 5) -> dict:
    data = load_pipeline_data(YAML_DIR / "bm25.yaml", {"index": str(corpus)})
    data["components"]["bm25"]["init_parameters"]["top_k"] = top_k
    return data


def _run(data: dict, questions, cache: NodeCache | None):
    runner = BatchRunner(Pipeline.from_dict(data, allowed_modules=["hopstack"]), node_cache=cache)
    return runner.run([runner.question_input(q.question) for q in questions])


def test_cached_rerun_computes_nothing_and_returns_the_same_outputs(tmp_path, sample_corpus, sample_questions):
    data = _bm25_data(sample_corpus)
    first = _run(data, sample_questions, NodeCache(tmp_path / "nodes.sqlite", enabled=True))
    assert first.stats["bm25"].items == len(sample_questions) and first.stats["bm25"].cached == 0
    second = _run(data, sample_questions, NodeCache(tmp_path / "nodes.sqlite", enabled=True))
    assert second.stats["bm25"].items == 0 and second.stats["bm25"].calls == 0
    assert second.stats["bm25"].cached == len(sample_questions)
    assert second.stats["bm25"].cached_compute_s == pytest.approx(first.stats["bm25"].wall_s, rel=1e-6)
    assert [_docs(o) for o in second.outputs] == [_docs(o) for o in first.outputs]


def test_only_new_questions_and_changed_nodes_are_computed(tmp_path, sample_corpus, sample_questions):
    cache_path = tmp_path / "nodes.sqlite"
    data = _bm25_data(sample_corpus)
    _run(data, sample_questions[:10], NodeCache(cache_path, enabled=True))
    more = _run(data, sample_questions, NodeCache(cache_path, enabled=True))
    assert (more.stats["bm25"].items, more.stats["bm25"].cached) == (len(sample_questions) - 10, 10)
    uncached = _run(data, sample_questions, None)
    assert [_docs(o) for o in more.outputs] == [_docs(o) for o in uncached.outputs]
    changed = _run(_bm25_data(sample_corpus, top_k=3), sample_questions, NodeCache(cache_path, enabled=True))
    assert changed.stats["bm25"].cached == 0
    assert all(len(o["bm25"]["documents"]) == 3 for o in changed.outputs)


def test_a_changed_corpus_changes_the_fingerprint(tmp_path, sample_corpus, sample_questions):
    corpus = tmp_path / "corpus.jsonl"
    shutil.copy(sample_corpus, corpus)
    cache_path = tmp_path / "nodes.sqlite"
    _run(_bm25_data(corpus), sample_questions, NodeCache(cache_path, enabled=True))
    with corpus.open("a", encoding="utf-8") as f:
        f.write('{"id": "extra", "title": "Extra", "text": "An extra document about looms."}\n')
    rerun = _run(_bm25_data(corpus), sample_questions, NodeCache(cache_path, enabled=True))
    assert rerun.stats["bm25"].cached == 0


@component
class _EvenOnly:
    """Emits ``documents`` only for even numbers: a branch that does not always fire."""

    @component.output_types(documents=list[Document])
    def run(self, number: int):
        return {"documents": [Document(content=str(number))]} if number % 2 == 0 else {}


@component
class _Count:
    calls = 0

    @component.output_types(count=int)
    def run(self, documents: list[Document]):
        _Count.calls += 1
        return {"count": len(documents)}


def test_items_a_branch_skipped_are_cached_as_skipped(tmp_path):
    pipeline = Pipeline()
    pipeline.add_component("even", _EvenOnly())
    pipeline.add_component("count", _Count())
    pipeline.connect("even.documents", "count.documents")
    inputs = [{"even": {"number": i}} for i in range(6)]
    first = BatchRunner(pipeline, node_cache=NodeCache(tmp_path / "n.sqlite", enabled=True)).run(inputs)
    calls = _Count.calls
    second = BatchRunner(pipeline, node_cache=NodeCache(tmp_path / "n.sqlite", enabled=True)).run(inputs)
    assert _Count.calls == calls and second.stats["even"].items == 0
    assert second.outputs == first.outputs == [{"count": {"count": 1}} if i % 2 == 0 else {} for i in range(6)]


def test_documents_are_stored_once_however_many_entries_hold_them(tmp_path, sample_corpus, sample_questions):
    cache = NodeCache(tmp_path / "nodes.sqlite", enabled=True)
    outputs = _run(_bm25_data(sample_corpus, top_k=40), sample_questions, cache).outputs
    held = [d.id for output in outputs for d in output["bm25"]["documents"]]
    db = cache._connection()
    (documents,) = db.execute("SELECT COUNT(*) FROM documents_v3").fetchone()
    assert documents == len(set(held)) < len(held)  # each document once, however many of the entries hold it


def test_past_its_limit_entries_are_evicted_with_the_documents_only_they_held(
    tmp_path, sample_corpus, sample_questions
):
    path = tmp_path / "nodes.sqlite"
    whole = NodeCache(path, enabled=True)
    _run(_bm25_data(sample_corpus), sample_questions, whole)
    full = whole.info()["stored"]
    whole.clear()
    cache = NodeCache(path, enabled=True, limit_bytes=full // 2)
    for start in range(0, len(sample_questions), 4):  # a batch at a time, as a service fills it
        _run(_bm25_data(sample_corpus), sample_questions[start : start + 4], cache)
    db = cache._connection()
    (entries,) = db.execute("SELECT COUNT(*) FROM entries_v3").fetchone()
    assert cache.evicted > 0 and 0 < entries < len(sample_questions) and cache.info()["stored"] <= full // 2
    orphans = db.execute(
        "SELECT COUNT(*) FROM documents_v3 WHERE digest NOT IN (SELECT digest FROM references_v3)"
    ).fetchone()[0]
    dangling = db.execute(
        "SELECT COUNT(*) FROM references_v3 WHERE digest NOT IN (SELECT digest FROM documents_v3)"
        " OR key NOT IN (SELECT key FROM entries_v3)"
    ).fetchone()[0]
    assert orphans == 0 and dangling == 0
    assert cache.verify() == (entries, 0), "what is left is whole"
    rerun = _run(_bm25_data(sample_corpus), sample_questions, NodeCache(path, enabled=True, limit_bytes=full * 2))
    assert rerun.stats["bm25"].items == len(sample_questions) - entries  # only the evicted ones are computed


def test_a_disabled_cache_stores_nothing(tmp_path, sample_corpus, sample_questions):
    cache = NodeCache(tmp_path / "nodes.sqlite", enabled=False)
    result = _run(_bm25_data(sample_corpus), sample_questions, cache)
    assert cache.stores == 0 and not (tmp_path / "nodes.sqlite").exists()
    assert result.stats["bm25"].items == len(sample_questions)


def test_union_runs_shared_nodes_once_and_gives_each_variant_its_own_outputs(
    write_yaml, tmp_path, sample_corpus, sample_questions
):
    grid = write_yaml(
        """
        parameters:
          fuse.method: [rrf, zscore, minmax]
        """,
        name="grid.yaml",
    )
    variants = expand_variants(
        [YAML_DIR / "hybrid.yaml", YAML_DIR / "bm25.yaml"], read_grid(grid), {"index": str(sample_corpus)}
    )
    assert [v.name for v in variants] == [
        "hybrid[fuse.method=rrf]",
        "hybrid[fuse.method=zscore]",
        "hybrid[fuse.method=minmax]",
        "bm25",
    ]
    union, failed = build_union({v.name: v.data for v in variants})
    assert not failed
    # the three hybrids share bm25 and dense; bm25.yaml's retriever has another top_k
    assert sorted(union.pipeline.graph.nodes) == ["bm25", "bm25#2", "dense", "fuse", "fuse#2", "fuse#3"]
    assert union.sharing["dense"] == [v.name for v in variants[:3]]
    runner = BatchRunner(union.pipeline)
    result = runner.run(
        [runner.question_input(q.question) for q in sample_questions], include_outputs_from=union.output_nodes
    )
    assert result.stats["dense"].calls == 1 and result.stats["dense"].items == len(sample_questions)
    for variant in variants:
        alone = _run(variant.data, sample_questions, None)
        from_union = [union.variant_outputs(variant.name, item) for item in result.outputs]
        assert [_docs(o) for o in from_union] == [_docs(o) for o in alone.outputs], variant.name


def test_grid_errors_name_the_file_and_key(write_yaml, sample_corpus):
    from hopstack.errors import HopstackInputError

    bad_key = write_yaml("parameters:\n  fuse: [1, 2]\n", name="g1.yaml")
    with pytest.raises(HopstackInputError, match=r"g1\.yaml: parameters\.fuse: write keys as component\.parameter"):
        read_grid(bad_key)
    empty = write_yaml("parameters:\n  fuse.top_k: []\n", name="g2.yaml")
    with pytest.raises(HopstackInputError, match=r"g2\.yaml: parameters\.fuse\.top_k: give a non-empty list"):
        read_grid(empty)
    nothing = write_yaml("pipelines: []\n", name="g0.yaml")
    with pytest.raises(HopstackInputError, match=r"g0\.yaml: a grid file needs 'pipelines'"):
        read_grid(nothing)
    unused = write_yaml("parameters:\n  rerank.top_k: [1, 2]\n", name="g3.yaml")
    with pytest.raises(HopstackInputError, match=r"g3\.yaml: no pipeline has the component of rerank\.top_k"):
        expand_variants([YAML_DIR / "bm25.yaml"], read_grid(unused), {"index": str(sample_corpus)})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("parameters: &p {bm25.k1: [1.0]}\npipelines: *p\n", "YAML aliases (*name) are not read"),
        ("parameters:\n  bm25.k1: [1.0]\n  bm25.k1: [2.0]\n", "duplicate key 'bm25.k1'"),
        ("parameters: {bm25.k1: " + "[" * 100 + "]" * 100 + "}\n", "nested deeper than 64 levels"),
        ("pipelines: [p.yaml, ./p.yaml, p.yaml]\n", "pipelines lists ./p.yaml twice (entries 1 and 2)"),
        ("pipelines: [p.yaml]\n5: x\n~: y\n", "unknown key(s) 5, None; a grid file has pipelines, parameters"),
        ("pipelines: [p.yaml]\nx: !!timestamp not-a-time\n", "cannot read 'not-a-time' as tag:yaml.org,2002:timestamp"),
        ("pipelines: [p.yaml]\n#" + "x" * (1 << 18) + "\n", "over 262,144 characters; grid files are read up to that"),
    ],
)
def test_grid_files_are_read_as_safely_as_pipeline_files(write_yaml, text, message):
    path = write_yaml(text, name="grid.yaml")
    with pytest.raises(HopstackInputError) as info:
        read_grid(path)
    assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_a_grid_that_lists_no_pipeline_names_itself_when_nothing_else_is_compared(write_yaml):
    grid = read_grid(write_yaml("parameters: {bm25.k1: [1.0]}\n", name="grid.yaml"))
    with pytest.raises(HopstackInputError) as info:
        expand_variants([], grid)
    assert str(info.value).startswith("no pipelines to compare") and f"; {grid.path} lists none" in str(info.value)


def test_a_grid_point_that_does_not_validate_keeps_its_error_and_the_others_load(write_yaml, sample_corpus):
    grid = write_yaml("parameters:\n  fuse.method: [rrf, nonsense]\n", name="grid.yaml")
    variants = expand_variants([YAML_DIR / "hybrid.yaml"], read_grid(grid), {"index": str(sample_corpus)})
    good, bad = variants
    assert good.data is not None and good.error is None
    assert bad.data is None and "component 'fuse'" in bad.error and "nonsense" in bad.error


def test_stats_only_reads_costs_without_computing_or_loading(tmp_path, sample_corpus, sample_questions):
    data = _bm25_data(sample_corpus)
    first = _run(data, sample_questions, NodeCache(tmp_path / "nodes.sqlite", enabled=True))
    cache = NodeCache(tmp_path / "nodes.sqlite", enabled=True)
    runner = BatchRunner(Pipeline.from_dict(data, allowed_modules=["hopstack"]), node_cache=cache)
    result = runner.run([runner.question_input(q.question) for q in sample_questions], stats_only=True)
    assert result.outputs == [{}] * len(sample_questions) and cache.hits == 0
    assert result.stats["bm25"].items == 0
    assert result.stats["bm25"].cached_compute_s == pytest.approx(first.stats["bm25"].wall_s, rel=1e-6)
    with pytest.raises(ValueError, match="needs a node cache"):
        BatchRunner(Pipeline.from_dict(data, allowed_modules=["hopstack"])).run([], stats_only=True)


def test_a_grid_file_may_just_list_pipelines(tmp_path, sample_corpus):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"pipelines: [{YAML_DIR / 'bm25.yaml'}, {YAML_DIR / 'dense.yaml'}]\n", encoding="utf-8")
    variants = expand_variants([], read_grid(grid), {"index": str(sample_corpus)})
    assert [v.name for v in variants] == ["bm25", "dense"] and all(v.data for v in variants)


# -- a cache that cannot run code or lie --------------------------------------------------------------
def test_every_cached_type_round_trips_through_json():
    from haystack.dataclasses import ChatMessage, GeneratedAnswer

    from hopstack.graphs.node_cache import Uncacheable, decode, encode

    document = Document(id="d", content="text", meta={"title": "T", "year": 1871}, score=0.5)
    value = {
        "documents": [document],
        "answers": [GeneratedAnswer(data="Lima", query="q", documents=[document], meta={"confidence": 0.9})],
        "replies": [ChatMessage.from_assistant("yes")],
        "matrix": np.arange(6, dtype=np.float32).reshape(2, 3),
        "pair": (1, "a"),
        "by_number": {1: "one"},
        "scalar": np.float32(0.25),
        "nan": float("nan"),
    }
    stored: dict[str, str] = {}
    text = json.dumps(encode(value, stored, {}))
    back = decode(json.loads(text), lambda digest: Document.from_dict(json.loads(stored[digest])))
    assert back["documents"] == [document] and back["documents"][0].score == 0.5
    assert back["answers"][0].data == "Lima" and back["answers"][0].documents == [document]
    assert back["replies"][0].text == "yes"
    assert back["matrix"].dtype == np.float32 and back["matrix"].tolist() == value["matrix"].tolist()
    assert back["pair"] == (1, "a") and back["by_number"] == {1: "one"} and back["scalar"] == 0.25
    assert math.isnan(back["nan"])
    with pytest.raises(Uncacheable, match="does not store object"):
        encode({"x": object()}, {}, {})


def _swap_values(path: Path) -> None:
    db = sqlite3.connect(path)
    (a_key, a_value), (b_key, b_value) = db.execute("SELECT key, value FROM entries_v3 LIMIT 2").fetchall()
    db.execute("UPDATE entries_v3 SET value = ? WHERE key = ?", (b_value, a_key))
    db.execute("UPDATE entries_v3 SET value = ? WHERE key = ?", (a_value, b_key))
    db.commit()
    db.close()


def test_edited_or_foreign_entries_are_computed_again_never_served(tmp_path, sample_corpus, sample_questions, caplog):
    data = _bm25_data(sample_corpus)
    fresh = [_docs(o) for o in _run(data, sample_questions, None).outputs]
    path = tmp_path / "nodes.sqlite"
    _run(data, sample_questions, NodeCache(path, enabled=True))
    _swap_values(path)  # two questions' outputs exchanged, as an edit would
    cache = NodeCache(path, enabled=True)
    edited = _run(data, sample_questions, cache)
    assert cache.damaged == 2 and edited.stats["bm25"].items == 2
    assert [_docs(o) for o in edited.outputs] == fresh
    assert str(path) in caplog.text and "does not verify" in caplog.text
    elsewhere = tmp_path / "copy" / "nodes.sqlite"  # the file without its key: made elsewhere
    elsewhere.parent.mkdir()
    for part in tmp_path.glob("nodes.sqlite*"):  # the database and its write-ahead log, not the key
        if not part.name.endswith(".key"):
            shutil.copy(part, elsewhere.parent / part.name)
    foreign = NodeCache(elsewhere, enabled=True)
    assert [_docs(o) for o in _run(data, sample_questions, foreign).outputs] == fresh
    assert foreign.damaged == len(sample_questions) and foreign.hits == 0


def test_a_pickle_in_the_file_is_never_loaded_and_a_damaged_file_is_skipped(
    tmp_path, sample_corpus, sample_questions, caplog
):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "nodes.sqlite"
    db = sqlite3.connect(path)  # the old layout, where values were pickles
    db.execute("CREATE TABLE entries (key TEXT PRIMARY KEY, seconds REAL NOT NULL, value BLOB NOT NULL)")
    db.execute("INSERT INTO entries VALUES (?, 0, ?)", ("k", pickle.dumps(Payload())))
    db.commit()
    db.close()
    data = _bm25_data(sample_corpus)
    assert _run(data, sample_questions, NodeCache(path, enabled=True)).stats["bm25"].items == len(sample_questions)
    assert not marker.exists()
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database " * 100)
    cache = NodeCache(garbage, enabled=True)
    result = _run(data, sample_questions, cache)
    assert result.stats["bm25"].items == len(sample_questions) and not cache.enabled
    assert f"node cache {garbage} cannot be used" in caplog.text
