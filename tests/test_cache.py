"""The on-disk call cache: a repeated call makes no model call; off means off."""

import json
import sqlite3
import threading

import pytest

from hopstack.models.cache import LLM_CACHE_CHUNK, CachedLLM, CallCache, call_key


class CountingLLM:
    """A stand-in backend that records every prompt it is sent."""

    model = "counting"
    n_ctx = 64

    def __init__(self):
        self.seen = []

    def generate(self, prompts, max_tokens=128, temperature=0.0, stop=None, seed=0):
        self.seen.extend(prompts)
        return [f"{p}|{max_tokens}" for p in prompts]

    def score(self, prompts, candidates):
        self.seen.extend(prompts)
        return [[-float(len(p) + len(c)) for c in candidates] for p in prompts]


def test_repeated_calls_are_served_from_disk(tmp_path):
    backend = CountingLLM()
    llm = CachedLLM(backend, CallCache(tmp_path / "calls.sqlite", enabled=True))
    assert llm.generate(["a", "b"], max_tokens=5) == ["a|5", "b|5"]
    assert llm.generate(["b", "c"], max_tokens=5) == ["b|5", "c|5"]
    assert backend.seen == ["a", "b", "c"] and (llm.calls, llm.hits) == (3, 1)
    assert llm.generate(["a"], max_tokens=6) == ["a|6"]  # other parameters, other key
    chat = [{"role": "user", "content": "hi"}]
    assert llm.score([chat, "x"], ["yes", "no"]) == llm.score([chat, "x"], ["yes", "no"])
    # a new process (a new cache object on the same file) makes no calls either
    again = CachedLLM(CountingLLM(), CallCache(tmp_path / "calls.sqlite", enabled=True))
    assert again.generate(["a", "b", "c"], max_tokens=5) == ["a|5", "b|5", "c|5"] and again.calls == 0


def test_answers_with_flash_attention_are_kept_apart_from_answers_without(tmp_path):
    unfused, fused = CountingLLM(), CountingLLM()
    fused.flash_attn = True  # llama.cpp's fused attention kernels: the same answers up to the last digits
    CachedLLM(unfused, CallCache(tmp_path / "calls.sqlite", enabled=True)).generate(["a"])
    CachedLLM(fused, CallCache(tmp_path / "calls.sqlite", enabled=True)).generate(["a"])
    assert unfused.seen == fused.seen == ["a"]


def test_an_interrupted_llm_batch_keeps_the_chunks_it_finished(tmp_path):
    failing = CountingLLM()
    succeeding = failing.generate

    def generate(prompts, *args):
        if "p20" in prompts:
            raise RuntimeError("killed")
        return succeeding(prompts, *args)

    failing.generate = generate
    prompts = [f"p{i}" for i in range(40)]
    with pytest.raises(RuntimeError, match="killed"):
        CachedLLM(failing, CallCache(tmp_path / "calls.sqlite", enabled=True)).generate(prompts)
    backend = CountingLLM()
    CachedLLM(backend, CallCache(tmp_path / "calls.sqlite", enabled=True)).generate(prompts)
    assert backend.seen == prompts[LLM_CACHE_CHUNK:], "the first chunk was stored before the failure"


def test_the_switch_turns_the_cache_off(tmp_path, monkeypatch):
    monkeypatch.setenv("HOPSTACK_CACHE", "off")
    backend = CountingLLM()
    llm = CachedLLM(backend, CallCache(tmp_path / "calls.sqlite"))
    llm.generate(["a"])
    llm.generate(["a"])
    assert backend.seen == ["a", "a"] and not (tmp_path / "calls.sqlite").exists()


def test_keys_depend_on_identity_and_input_and_threads_share_the_file(tmp_path):
    assert call_key({"m": 1}, "x") == call_key({"m": 1}, "x") != call_key({"m": 2}, "x") != call_key({"m": 1}, "y")
    cache = CallCache(tmp_path / "calls.sqlite", enabled=True)

    def work(n):
        cache.put_many({f"k{n}-{i}": i for i in range(50)})

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache.get_many([f"k{n}-{i}" for n in range(4) for i in range(50)])) == 200


def test_dense_query_embeddings_come_from_the_cache_on_a_rerun(tmp_path, monkeypatch, sample_corpus):
    import numpy as np

    from hopstack.components.retrieval import DenseRetriever

    monkeypatch.setenv("HOPSTACK_CACHE", "on")
    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path))
    retriever = DenseRetriever(index=str(sample_corpus), top_k=3, device="cpu")
    retriever.warm_up()
    encoded = []
    real_encode = retriever._encoder.encode

    def counting_encode(texts, **kwargs):
        encoded.extend(texts)
        return real_encode(texts, **kwargs)

    monkeypatch.setattr(retriever._encoder, "encode", counting_encode)
    queries = ["Who founded Brannock Looms?", "Which river runs through Hollin Ford?"]
    first = retriever.run_batch(query=queries)["documents"]
    second = retriever.run_batch(query=queries + ["a new question"])["documents"]
    assert encoded == [*queries, "a new question"]  # the rerun encoded only the new query
    other = DenseRetriever(index=str(sample_corpus), top_k=5, device="cpu")
    other.warm_up()
    assert other._encoder is retriever._encoder and len(encoded) == 3, "the in-memory corpus is embedded once"
    assert [d.id for d in other.run_batch(query=queries[:1])["documents"][0][:3]] == [d.id for d in first[0]]
    assert [[d.id for d in docs] for docs in first] == [[d.id for d in docs] for docs in second[:2]]
    np.testing.assert_allclose([d.score for d in first[0]], [d.score for d in second[0]], rtol=1e-6)
    assert (tmp_path / "cache" / "calls.sqlite").exists()


def test_an_edited_entry_is_computed_again_and_verify_finds_it(tmp_path, caplog):
    path = tmp_path / "calls.sqlite"
    cache = CallCache(path, enabled=True)
    CachedLLM(CountingLLM(), cache).generate(["a", "b"])
    db = sqlite3.connect(path)  # a rotated or NaN embedding, an exchanged answer: any edit of a value
    db.execute("UPDATE calls_v3 SET value = ? WHERE value = ?", (json.dumps("a|128 edited"), json.dumps("a|128")))
    db.commit()
    db.close()
    backend = CountingLLM()
    fresh = CallCache(path, enabled=True)
    assert CachedLLM(backend, fresh).generate(["a", "b"]) == ["a|128", "b|128"]
    assert backend.seen == ["a"] and fresh.damaged == 1
    assert f"call cache {path}: an entry does not verify" in caplog.text
    assert fresh.verify() == (2, 0), "the recomputed entry replaced the edited one"
    assert fresh.info()["rows"] == {"calls_v3": 2}


def test_a_damaged_file_is_reported_once_and_the_calls_made(tmp_path, caplog):
    path = tmp_path / "calls.sqlite"
    path.write_bytes(b"\x00garbage" * 200)
    backend = CountingLLM()
    cache = CallCache(path, enabled=True)
    assert CachedLLM(backend, cache).generate(["a"]) == ["a|128"] and not cache.enabled
    assert caplog.text.count(f"call cache {path} cannot be used") == 1
    cache.clear()
    assert not path.exists()


def test_past_its_limit_the_least_recently_used_entries_are_evicted(tmp_path, monkeypatch):
    monkeypatch.setattr("hopstack.models.cache.TOUCH_INTERVAL_NS", 0)  # every read marks its entry used
    cache = CallCache(tmp_path / "calls.sqlite", enabled=True, limit_bytes=20_000)
    value = "x" * 900  # about 1 KB an entry with its key
    cache.put_many({"kept": value})
    for i in range(60):
        cache.put_many({f"k{i}": value})
        assert "kept" in cache.get_many(["kept"]), "an entry in use is never the least recently used"
    info = cache.info()
    assert info["stored"] <= 20_000 and cache.evicted >= 40
    assert info["rows"]["calls_v3"] == len(cache.get_many(["kept"] + [f"k{i}" for i in range(60)]))
    assert cache.get_many(["k0", "k1"]) == {} and "k59" in cache.get_many(["k59"])
    reopened = CallCache(tmp_path / "calls.sqlite", enabled=True, limit_bytes=20_000)
    assert reopened.info()["stored"] == info["stored"], "the size is kept in the file, not counted again"


def test_a_hot_entry_is_marked_used_at_most_once_a_minute(tmp_path, monkeypatch):
    cache = CallCache(tmp_path / "calls.sqlite", enabled=True)
    cache.put_many({"hot": "v"})

    def used() -> int:
        with sqlite3.connect(tmp_path / "calls.sqlite") as db:
            return db.execute("SELECT used FROM calls_v3 WHERE key = 'hot'").fetchone()[0]

    cache.get_many(["hot"])
    first = used()
    cache.get_many(["hot"])
    assert used() == first, "a second read within the interval writes nothing"
    monkeypatch.setattr("hopstack.models.cache.TOUCH_INTERVAL_NS", 0)
    cache.get_many(["hot"])
    assert used() > first


def test_the_limit_comes_from_the_environment_and_bad_values_are_refused(tmp_path, monkeypatch):
    from hopstack.core.settings import cache_limit_bytes
    from hopstack.errors import HopstackInputError

    monkeypatch.setenv("HOPSTACK_CACHE_MAX_MB", "0.5")
    assert cache_limit_bytes() == 512 * 1024
    assert CallCache(tmp_path / "calls.sqlite", enabled=True).info()["limit"] == 512 * 1024
    for bad in ("0", "-3", "nan", "inf", "lots"):
        monkeypatch.setenv("HOPSTACK_CACHE_MAX_MB", bad)
        with pytest.raises(HopstackInputError, match="HOPSTACK_CACHE_MAX_MB must be a positive number"):
            cache_limit_bytes()


def test_a_hit_is_charged_the_seconds_its_entry_took(tmp_path):
    import time

    from hopstack.models.cache import saved_compute

    class SlowLLM(CountingLLM):
        def generate(self, prompts, *args):
            time.sleep(0.01 * len(prompts))
            return super().generate(prompts, *args)

    path = tmp_path / "calls.sqlite"
    llm = CachedLLM(SlowLLM(), CallCache(path, enabled=True))
    with saved_compute() as first:
        llm.generate(["a", "b", "c"])
    stored = dict(sqlite3.connect(path).execute("SELECT key, seconds FROM calls_v3").fetchall())
    assert first.seconds == 0 and len(stored) == 3 and all(s >= 0.01 for s in stored.values())
    with saved_compute() as outer:
        with saved_compute() as second:
            llm.generate(["a", "b", "d"])
    assert second.seconds == pytest.approx(2 * sum(stored.values()) / 3)
    assert outer.seconds == second.seconds, "an inner meter's seconds count in the outer one too"


def test_a_node_whose_model_calls_the_cache_served_is_charged_what_they_took(
    tmp_path, monkeypatch, sample_corpus, sample_questions
):
    from haystack import Pipeline

    from hopstack.graphs.runner import BatchRunner
    from hopstack.spec.loading import load_pipeline_data
    from tests.conftest import YAML_DIR

    monkeypatch.setenv("HOPSTACK_CACHE", "on")
    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path))
    stored_s = []  # the seconds the call cache holds before and after each run (warm-up embeds the corpus)
    stats = []
    for top_k in (5, 3):  # two dense retrievers that embed the same queries: the second finds them cached
        data = load_pipeline_data(YAML_DIR / "dense.yaml", {"index": str(sample_corpus)})
        data["components"]["dense"]["init_parameters"].update(top_k=top_k, device="cpu")
        runner = BatchRunner(Pipeline.from_dict(data, allowed_modules=["hopstack"]))
        runner.warm_up()
        db = sqlite3.connect(tmp_path / "cache" / "calls.sqlite")
        stored_s.append(db.execute("SELECT COALESCE(SUM(seconds), 0) FROM calls_v3").fetchone()[0])
        stats.append(runner.run([runner.question_input(q.question) for q in sample_questions]).stats["dense"])
        stored_s.append(db.execute("SELECT SUM(seconds) FROM calls_v3").fetchone()[0])
    embedding_s = stored_s[1] - stored_s[0]  # the first run's query embeddings
    assert stored_s[3] == stored_s[2], "the second run embedded nothing new"
    assert stats[0].call_cached_s == 0 and embedding_s > 0
    assert stats[1].call_cached_s == pytest.approx(embedding_s)
    assert stats[1].compute_s == pytest.approx(stats[1].wall_s + embedding_s)
