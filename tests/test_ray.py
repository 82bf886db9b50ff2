"""``--ray`` on index, eval and compare: the same index and the same results as one process, on a real two-node
Ray cluster on 127.0.0.1 (two ``ray start`` processes, stopped by PID), and a worker killed mid-evaluation."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO, SHARED_DATA, YAML_DIR
from hopstack.core.ray_cluster import RaySettings, _head_endpoint, is_address
from hopstack.datasets.benchmark import dataset_corpus
from hopstack.demo import SAMPLE_CORPUS, SAMPLE_DIR
from hopstack.errors import HopstackInputError
from hopstack.graphs.ray_runner import merge_stats
from hopstack.graphs.runner import NodeStats
from hopstack.testing import LocalRayCluster, free_port

pytest.importorskip("ray")
needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no benchmark data (set $HOPSTACK_DATA)")


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of one CPU each: two actors of one CPU each can only run one on each node."""
    with LocalRayCluster(nodes=2, cpus_per_node=1) as running:
        yield running


@pytest.fixture(scope="module")
def mhr_index(tmp_path_factory):
    """A BM25-only index of MultiHop-RAG's corpus (8 s)."""
    from hopstack.index.store import build_index

    out = tmp_path_factory.mktemp("mhr") / "index"
    build_index(dataset_corpus("multihop-rag"), out, dense=None)
    return out


def test_ray_addresses_and_a_bare_ray_option():
    from hopstack.cli import bare_ray_as_local

    assert all(is_address(a) for a in ("auto", "local", "", "ray://10.0.0.1:10001", "head-node:6379"))
    assert not any(is_address(a) for a in ("yaml/bm25.yaml", "--limit", "corpus.jsonl"))
    assert bare_ray_as_local(["eval", "--ray", "f.yaml"]) == ["eval", "--ray=local", "f.yaml"]
    assert bare_ray_as_local(["eval", "f.yaml", "--ray"]) == ["eval", "f.yaml", "--ray=local"]
    assert bare_ray_as_local(["eval", "--ray", "--limit", "3"]) == ["eval", "--ray=local", "--limit", "3"]
    assert bare_ray_as_local(["eval", "--ray", "auto"]) == ["eval", "--ray", "auto"]
    assert _head_endpoint("ray://h:10001") == ("h", 10001) and _head_endpoint("auto") is None
    for bad in ("http://h:1", "h", "h:port"):
        with pytest.raises(HopstackInputError, match="Ray address"):
            _head_endpoint(bad)
    assert RaySettings(actors=3).actor_count() == 3 and RaySettings(actors=2, cpus_per_actor=0).actor_count() == 2
    with pytest.raises(HopstackInputError, match="--ray-actors N"):
        RaySettings(cpus_per_actor=0).actor_count()


def test_shard_statistics_add_up():
    a = {"bm25": NodeStats("bm25", "BM25Retriever", calls=1, items=5, wall_s=0.5, batch_sizes=[5], batched=True)}
    b = {"bm25": NodeStats("bm25", "BM25Retriever", calls=2, items=3, wall_s=0.25, batch_sizes=[2, 1], cached=4)}
    merged = merge_stats([a, b])["bm25"]
    assert (merged.calls, merged.items, merged.wall_s, merged.batch_sizes, merged.cached) == (3, 8, 0.75, [5, 2, 1], 4)
    assert merged.batched and a["bm25"].calls == 1  # the parts are left alone


def test_ray_options_need_ray_and_its_extra(cli, monkeypatch):
    args = ["eval", YAML_DIR / "bm25.yaml", "--dataset", SAMPLE_DIR, "--index", SAMPLE_CORPUS]
    code, _, err = cli(*args, "--ray-actors", "2")
    assert code == 2 and "--ray-actors need --ray" in err
    code, _, err = cli(*args, "--ray-cpus-per-actor", "2", "--ray-gpus-per-actor", "1")
    assert code == 2 and "--ray-cpus-per-actor and --ray-gpus-per-actor need --ray" in err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code, _, err = cli(*args, "--ray")
    assert code == 2 and "pip install 'hopstack[ray]'" in err


def test_an_unreachable_cluster_fails_fast_and_is_named():
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "hopstack", "eval", YAML_DIR / "bm25.yaml", "--dataset", SAMPLE_DIR]
        + ["--index", SAMPLE_CORPUS, "--ray", address],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2 and f"Ray cluster at {address} is unreachable" in done.stderr
    assert time.monotonic() - started < 30


@pytest.mark.slow
def test_index_on_two_nodes_is_the_single_process_index(cluster, cli, tmp_path):
    code, _, err = cli("index", SAMPLE_CORPUS, "--out", tmp_path / "local", "--dense-shards", "2")
    assert code == 0, err
    ray_options = ["--ray", cluster.address, "--ray-actors", "2"]
    code, _, err = cli("index", SAMPLE_CORPUS, "--out", tmp_path / "ray", "--dense-shards", "2", *ray_options)
    assert code == 0, err
    local, spread = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("local", "ray"))
    assert local["counts"] == spread["counts"] and local["dense"] == spread["dense"] and local["dense"]["shards"] == 2
    for name in ("documents.sqlite", *(f for f in local["files"] if f.startswith("bm25/"))):
        assert local["files"][name] == spread["files"][name], name  # same chunk ids and texts, same BM25 matrices
    vectors = [np.load(tmp_path / name / "dense" / "embeddings.npy") for name in ("local", "ray")]
    assert vectors[0].shape == vectors[1].shape and np.abs(vectors[0] - vectors[1]).max() <= 1e-5
    from ray.util.state import list_actors

    for kind in ("DocumentChunker", "ChunkEmbedder"):  # Ray Data's actor pools ran on both nodes
        actors = [a for a in list_actors(address=cluster.address, limit=1000) if kind in a.class_name]
        assert len({a.node_id for a in actors}) == 2, (kind, actors)


@pytest.mark.slow
def test_a_folder_corpus_is_read_file_by_file_on_both_nodes(cluster, cli, tmp_path, sample_corpus):
    from ray.util.state import list_actors

    corpus = tmp_path / "corpus"
    lines = sample_corpus.read_text(encoding="utf-8").splitlines()
    for i in range(8):  # eight .jsonl files of the sample's documents, and two text files in a subfolder
        (corpus / f"part-{i}.jsonl").parent.mkdir(exist_ok=True)
        (corpus / f"part-{i}.jsonl").write_text("\n".join(lines[i::8]) + "\n", encoding="utf-8")
    (corpus / "notes").mkdir()
    (corpus / "notes" / "a.md").write_text("# Weaving\nLooms were brought in 1802. They ran on water.\n")
    (corpus / "notes" / "b.txt").write_text("Plain notes about the mill.\n")
    ray_options = ["--ray", cluster.address, "--ray-actors", "2"]
    for name, options in (("local", []), ("ray", ray_options)):
        code, _, err = cli("index", corpus, "--out", tmp_path / name, "--no-dense", *options)
        assert code == 0, err
    local, spread = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("local", "ray"))
    assert local["counts"] == spread["counts"] == {"documents": 187, "chunks": local["counts"]["chunks"]}
    assert local["files"] == spread["files"]
    readers = [a for a in list_actors(address=cluster.address, limit=1000) if "_read_files" in a.class_name]
    assert len({a.node_id for a in readers}) == 2
    (corpus / "part-3.jsonl").write_text('{"id": "x", "text": "fine"}\n{"id": broken}\n', encoding="utf-8")
    code, _, err = cli("index", corpus, "--out", tmp_path / "bad", "--no-dense", *ray_options)
    assert code == 2 and "part-3.jsonl:2: not valid JSON" in err and not (tmp_path / "bad").exists()


def _compare(cli, out, *args, cache=None):
    code, _, err = cli("compare", *args, *(["--cache", cache] if cache else ["--no-cache"]), "--out", out)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    per_question = (out / "per_question.jsonl").read_text()
    return [(v["name"], v["status"], v["metrics"]) for v in results["variants"]], per_question, results["union"]


@pytest.mark.slow
def test_eval_and_compare_on_two_nodes_give_the_single_process_results(cluster, cli, tmp_path):
    args = ["--dataset", SAMPLE_DIR, "--index", SAMPLE_CORPUS]
    code, _, err = cli("eval", YAML_DIR / "hybrid.yaml", *args, "--json", tmp_path / "local.json")
    assert code == 0, err
    ray_options = ["--ray", cluster.address]
    code, _, err = cli("eval", YAML_DIR / "hybrid.yaml", *args, "--json", tmp_path / "ray.json", *ray_options)
    assert code == 0, err
    assert "shards on 2 Ray actor(s)" in err
    evaluated = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("local", "ray")]
    assert evaluated[0]["metrics"] == evaluated[1]["metrics"] and evaluated[0]["n_questions"] == 66
    files = [YAML_DIR / "bm25.yaml", YAML_DIR / "hybrid.yaml"]
    local = _compare(cli, tmp_path / "local", *files, *args)
    spread = _compare(cli, tmp_path / "ray", *files, *args, "--ray", cluster.address, cache=tmp_path / "nodes.sqlite")
    assert local[:2] == spread[:2] and [status for _, status, _ in local[0]] == ["ok", "ok"]
    # the actors filled the shared node cache: the same comparison in one process computes nothing
    again = _compare(cli, tmp_path / "again", *files, *args, cache=tmp_path / "nodes.sqlite")
    assert again[:2] == local[:2] and again[2]["computed_nodes"] == 0 and again[2]["cached_nodes"] >= 3


@pytest.mark.slow
@needs_data
def test_compare_of_300_multihop_rag_questions_on_two_nodes(cluster, cli, tmp_path, mhr_index):
    args = [YAML_DIR / "bm25.yaml", YAML_DIR / "bm25-rm3.yaml", "--dataset", "multihop-rag", "--index", mhr_index]
    args += ["--limit", "300"]
    local = _compare(cli, tmp_path / "local", *args)
    spread = _compare(cli, tmp_path / "ray", *args, "--ray", cluster.address)
    assert local[:2] == spread[:2] and len(local[1].splitlines()) == 300


@pytest.mark.slow
def test_a_worker_killed_mid_evaluation_changes_no_result(cluster):
    from ray.util.state import list_actors

    from hopstack.experiments.evaluation import evaluate

    # hybrid retrieval reranked by the shipped learned reranker: about 0.3 s a question on one core, so a shard of
    # 5 questions runs for over a second
    args = (YAML_DIR / "hybrid-rerank.yaml", str(SAMPLE_DIR), SAMPLE_CORPUS, 40)
    single = evaluate(*args)
    killed: list[dict] = []

    def kill_one_worker(node: str, done: int, total: int) -> None:
        if done == 1 and not killed:  # each actor has just been given a shard: one is killed while it runs it
            workers = list_actors(address=cluster.address, filters=[("class_name", "=", "ShardWorker")])
            alive = [w for w in workers if w.state == "ALIVE"]
            killed.append({"pid": alive[0].pid, "nodes": {w.node_id for w in alive}})
            os.kill(alive[0].pid, signal.SIGKILL)

    settings = RaySettings(cluster.address, actors=2, shard_size=5)
    spread = evaluate(*args, progress=kill_one_worker, ray=settings)
    assert killed and len(killed[0]["nodes"]) == 2  # the two actors ran on both nodes
    assert spread["metrics"] == single["metrics"]
    restarted = list_actors(address=cluster.address, filters=[("class_name", "=", "ShardWorker")], detail=True)
    assert any(actor.num_restarts >= 1 for actor in restarted)


@pytest.mark.slow
@pytest.mark.parametrize("shared_server", [False, True], ids=["a model per actor", "one server for all"])
def test_an_llm_reader_on_ray_scores_as_in_one_process(cluster, write_yaml, shared_server):
    from hopstack.experiments.evaluation import evaluate
    from hopstack.models.llama_server import llama_server

    with contextlib.ExitStack() as stack:
        llm = {"type": "llama.cpp", "init_parameters": {"model": "smollm2-135m", "n_ctx": 2048}}
        if shared_server:  # every actor sends its prompts to one OpenAI-compatible server
            base = stack.enter_context(llama_server("smollm2-135m", n_ctx=2048, alias="smollm2"))
            llm = {"type": "openai", "init_parameters": {"base_url": base, "model": "smollm2"}}
        pipeline = write_yaml(
            f"""
            metadata: {{hopstack: {{inputs: [query]}}}}
            components:
              bm25: {{type: hopstack.components.retrieval.BM25Retriever, init_parameters: {{top_k: 2}}}}
              reader:
                type: hopstack.components.generation.AnswerGenerator
                init_parameters: {{llm: {json.dumps(llm)}, max_documents: 2, max_tokens: 12}}
            connections: [{{sender: bm25.documents, receiver: reader.documents}}]
            """
        )
        args = (pipeline, str(SAMPLE_DIR), SAMPLE_CORPUS, 6)
        single = evaluate(*args)
        spread = evaluate(*args, ray=RaySettings(cluster.address, actors=2, shard_size=3))
    assert "F1" in single["metrics"] and spread["metrics"] == single["metrics"]
    reader = spread["timings"]["nodes"]["reader"]
    assert reader["items"] == 6 and reader["calls"] == 2  # one batch a shard, one shard on each actor
