"""Corpus formats, chunking, the index folder (atomic, checked) and retrieval over it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import SHARED_DATA, YAML_DIR
from hopstack.components.retrieval import BM25Retriever, DenseRetriever
from hopstack.errors import HopstackInputError
from hopstack.index.chunking import SentenceChunker, load_tokenizer
from hopstack.index.formats import SourceDocument, corpus_files, detect_format, read_corpus
from hopstack.index.store import build_index, corpus_hash, open_index, recover_swap

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no benchmark data (set $HOPSTACK_DATA)")


# -- formats ---------------------------------------------------------------------------------------
@needs_data
@pytest.mark.parametrize(
    ("relative", "expected_format", "count"),
    [
        ("multihop_rag/corpus.json", "multihop-rag", 609),
        ("scifact/corpus.jsonl", "beir", 5183),
        ("2wikimultihopqa/2wiki_dev_subset.json", "hotpotqa", 4306),
    ],
)
def test_real_corpora_are_detected_and_read(relative, expected_format, count):
    path = SHARED_DATA / relative
    assert detect_format(path) == expected_format
    documents = read_corpus(path)
    assert len(documents) == count
    assert all(d.text for d in documents[:50]) and len({d.id for d in documents}) == count


def test_jsonl_and_folder_formats(tmp_path, sample_corpus):
    assert detect_format(sample_corpus) == "jsonl" and len(read_corpus(sample_corpus)) == 185
    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Alpha notes\nAlpha text.\n", encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("Beta text.", encoding="utf-8")
    (folder / "ignored.bin").write_bytes(b"\x00")
    documents = read_corpus(folder)
    assert [(d.id, d.title) for d in documents] == [("a.md", "Alpha notes"), ("sub/b.txt", "b")]


def test_a_folder_reads_jsonl_files_beside_text_files_and_skips_questions(tmp_path, sample_corpus):
    folder = tmp_path / "docs"
    (folder / "beir").mkdir(parents=True)
    (folder / "a.md").write_text("# Alpha\nAlpha text.\n", encoding="utf-8")
    (folder / "corpus.jsonl").write_text(
        '{"id": "d1", "title": "One", "text": "one", "year": 1871}\n{"id": "d2", "text": "two"}\n', encoding="utf-8"
    )
    (folder / "beir" / "corpus.jsonl").write_text('{"_id": "b1", "title": "B", "text": "bee"}\n', encoding="utf-8")
    for name in ("questions.jsonl", "beir/queries.jsonl"):  # a dataset's questions, BEIR's queries: not documents
        (folder / name).write_text('{"_id": "q1", "id": "q1", "text": "?", "question": "?"}\n', encoding="utf-8")
    (folder / "corpus.json").write_text("[]", encoding="utf-8")  # a folder's .json files are not read
    documents = read_corpus(folder)
    assert [(d.id, d.title, d.text) for d in documents] == [
        ("a.md", "Alpha", "# Alpha\nAlpha text.\n"),
        ("b1", "B", "bee"),
        ("d1", "One", "one"),
        ("d2", "", "two"),
    ]
    assert documents[2].meta == {"year": 1871} and documents[0].meta == {"path": "a.md"}
    assert corpus_files(folder) == [folder / "a.md", folder / "beir" / "corpus.jsonl", folder / "corpus.jsonl"]
    # a dataset folder (questions.jsonl beside corpus.jsonl) is read, and hashed, as its corpus
    assert [d.id for d in read_corpus(sample_corpus.parent)] == [d.id for d in read_corpus(sample_corpus)]
    assert corpus_hash(sample_corpus.parent) == corpus_hash(sample_corpus) != corpus_hash(folder)
    (folder / "corpus.jsonl").write_text('{"id": "d1", "text": "one"}\n{"text": "no id"}\n', encoding="utf-8")
    with pytest.raises(HopstackInputError, match=r"docs/corpus.jsonl:2: a corpus line needs 'id' and 'text'"):
        read_corpus(folder)


@pytest.mark.parametrize(
    ("names", "hint"),
    [
        (["corpus.json", "MultiHopRAG.json"], "a folder's .json files are not read: pass the .json corpus file itself"),
        (["questions.jsonl"], "questions.jsonl and queries.jsonl hold questions, not documents"),
        (["documents.sqlite"], "it looks like an index folder without its manifest"),
    ],
)
def test_a_folder_without_documents_says_what_to_do(tmp_path, names, hint):
    for name in names:
        (tmp_path / name).write_text("[]", encoding="utf-8")
    with pytest.raises(HopstackInputError) as caught:
        read_corpus(tmp_path)
    assert "no .txt, .md or .jsonl documents in this folder" in str(caught.value) and hint in str(caught.value)


def test_bad_corpora_are_refused_with_the_file_named(tmp_path):
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes('{"id": "a", "text": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(HopstackInputError, match=r"latin1.jsonl: not UTF-8"):
        read_corpus(latin)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n", encoding="utf-8")
    with pytest.raises(HopstackInputError, match=r"empty.jsonl: the corpus is empty"):
        read_corpus(empty)
    beir = tmp_path / "corpus.jsonl"
    beir.write_text('{"_id": "1", "text": "x"}\n{"_id": "1", "text": "y"}\n', encoding="utf-8")
    with pytest.raises(HopstackInputError, match=r"corpus.jsonl: duplicate document id '1'"):
        read_corpus(beir)
    csv = tmp_path / "corpus.csv"
    csv.write_text("id,text\n1,x\n", encoding="utf-8")
    with pytest.raises(HopstackInputError, match="unknown corpus format"):
        read_corpus(csv)


# -- chunking --------------------------------------------------------------------------------------
def test_chunks_are_sentence_aligned_slices_within_budget_and_overlap():
    sentences = [f"Sentence number {i} talks about topic {i % 7} and nothing else at all." for i in range(60)]
    document = SourceDocument("doc", "Title", " ".join(sentences))
    chunker = SentenceChunker(max_tokens=64, overlap_tokens=16)
    chunks = chunker.split(document)
    tokenizer = load_tokenizer("minilm")
    assert len(chunks) > 5
    for chunk in chunks:
        assert document.text[chunk.start : chunk.end] == chunk.text
        assert chunk.text.startswith("Sentence") and chunk.text.endswith(".")
        assert len(tokenizer(chunk.text, add_special_tokens=False)["input_ids"]) <= 64
        assert chunk.id == f"doc#{chunk.position}" and chunk.doc_id == "doc"
    for before, after in zip(chunks, chunks[1:]):
        assert after.start < before.end, "consecutive chunks share their boundary sentences"
    assert chunks[-1].end == len(document.text)


def test_an_over_long_sentence_is_cut_at_token_boundaries():
    text = " ".join(["word"] * 100) + "."
    chunks = SentenceChunker(max_tokens=30, overlap_tokens=0, tokenizer="words").split(SourceDocument("x", "", text))
    assert [len(c.text.split()) for c in chunks] == [30, 30, 30, 10]
    assert "".join(c.text for c in chunks).replace(" ", "") == text.replace(" ", "")


# -- index folder ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sparse_index(tmp_path_factory, sample_corpus):
    out = tmp_path_factory.mktemp("indexes") / "sample"
    build_index(sample_corpus, out, dense=None)
    return out


def test_manifest_records_settings_counts_and_file_hashes(sparse_index):
    folder = open_index(sparse_index)
    manifest = folder.manifest
    assert manifest["format_version"] == 1 and manifest["counts"] == {"documents": 185, "chunks": 185}
    assert manifest["chunker"] == {"max_tokens": 256, "overlap_tokens": 25, "tokenizer": "minilm"}
    assert manifest["dense"] is None and "documents.sqlite" in manifest["files"]
    assert len(manifest["source"]["sha256"]) == 64
    assert not list(sparse_index.parent.glob(".sample.*")), "no building folder left behind"


def test_a_rebuild_of_the_same_content_elsewhere_keeps_the_retrievers_content_identity(
    sparse_index, tmp_path, sample_corpus
):
    import shutil

    copy = tmp_path / "corpus" / sample_corpus.name
    copy.parent.mkdir()
    shutil.copy(sample_corpus, copy)
    build_index(copy, tmp_path / "again", dense=None)  # another folder, a copy of the corpus, a later build
    build_index(sample_corpus, tmp_path / "other", dense=None, title_prefix=False)
    manifest = tmp_path / "again" / "manifest.json"
    again = json.loads(manifest.read_text())
    assert again["source"]["path"] != open_index(sparse_index).manifest["source"]["path"]
    # a build on another day that took longer (a fast build may share the first one's second)
    manifest.write_text(json.dumps({**again, "created": "2000-01-01T00:00:00Z", "build_seconds": 999.0}))

    def identity(folder):
        return BM25Retriever(index=str(folder)).content_identity()

    assert identity(tmp_path / "again") == identity(sparse_index) != identity(tmp_path / "other")


def test_bm25_over_the_stored_index_equals_bm25_built_in_memory(sparse_index, sample_corpus, sample_questions):
    queries = [q.question for q in sample_questions]
    stored = BM25Retriever(index=str(sparse_index), top_k=5).run_batch(query=queries)["documents"]
    memory = BM25Retriever(index=str(sample_corpus), top_k=5).run_batch(query=queries)["documents"]
    assert [[d.meta["doc_id"] for d in docs] for docs in stored] == [[d.id for d in docs] for docs in memory]
    assert np.allclose([d.score for docs in stored for d in docs], [d.score for docs in memory for d in docs])
    # other parameters than the index's: its chunks are re-indexed in memory
    other = BM25Retriever(index=str(sparse_index), k1=0.9, b=0.4).run(query=queries[0])["documents"]
    assert other and other[0].id.endswith("#0")


def _copy_index(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def test_damaged_indexes_are_refused_naming_the_file(sparse_index, tmp_path):
    truncated = _copy_index(sparse_index, tmp_path / "truncated")
    data = truncated / "bm25" / "data.csc.index.npy"
    data.write_bytes(data.read_bytes()[:-10])
    with pytest.raises(HopstackInputError, match=r"data.csc.index.npy: \d+ bytes, the manifest says"):
        open_index(truncated)
    corrupted = _copy_index(sparse_index, tmp_path / "corrupted")
    sqlite = corrupted / "documents.sqlite"
    _flip_a_byte(sqlite)
    with pytest.raises(HopstackInputError, match=r"documents.sqlite: content does not match"):
        open_index(corrupted)
    missing = _copy_index(sparse_index, tmp_path / "missing")
    (missing / "bm25" / "vocab.index.json").unlink()
    with pytest.raises(HopstackInputError, match=r"vocab.index.json: missing from the index"):
        open_index(missing)
    future = _copy_index(sparse_index, tmp_path / "future")
    manifest = json.loads((future / "manifest.json").read_text())
    manifest["format_version"] = 99
    (future / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HopstackInputError, match="index format version 99"):
        open_index(future)
    with pytest.raises(HopstackInputError, match="not a hopstack index"):
        open_index(tmp_path)


def _fake_embedder(monkeypatch):
    """Stand-ins for MiniLM where a test needs a dense index, not its embeddings: a vector per text from its crc."""
    import zlib

    def embed(model, texts, batch_size=64, normalize=True, **cache):
        rows = [np.random.default_rng(zlib.crc32(text.encode())).normal(size=8) for text in texts]
        vectors = np.array(rows, dtype=np.float32).reshape(len(texts), 8)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    for module in ("hopstack.models.embedders", "hopstack.components.retrieval"):
        monkeypatch.setattr(
            f"{module}.load_sentence_transformer", lambda model, device="auto", backend="torch": object()
        )
    monkeypatch.setattr("hopstack.models.embedders.embed_texts", embed)


def test_retrievers_of_one_folder_share_it_checked_once_and_a_rebuild_is_reopened(tmp_path, sample_corpus, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from hopstack.index import store

    _fake_embedder(monkeypatch)
    out = tmp_path / "hybrid"
    build_index(sample_corpus, out, device="cpu")
    files = len(json.loads((out / "manifest.json").read_text())["files"])
    hashed = []
    sha256 = store.file_sha256
    monkeypatch.setattr(store, "file_sha256", lambda path: hashed.append(path) or sha256(path))

    (tmp_path / "link").symlink_to(out)
    bm25, dense = BM25Retriever(index=str(out)), DenseRetriever(index=str(out), device="cpu")
    linked = BM25Retriever(index=str(tmp_path / "link"), method="robertson")  # its own BM25, the same documents
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda retriever: retriever.warm_up(), [bm25, dense, linked]))
    assert len(hashed) == files, "every file hashed once, whichever retriever opened the folder first"
    assert bm25._documents is dense._documents is linked._documents and len(bm25._documents) == 185
    assert open_index(out).sparse() is bm25._model and open_index(out).faiss() is dense._faiss_index
    assert len(hashed) == files

    build_index(sample_corpus, out, dense=None)  # rebuilt in place: a new manifest
    hashed.clear()
    rebuilt = BM25Retriever(index=str(out))
    rebuilt.warm_up()
    assert len(hashed) == len(json.loads((out / "manifest.json").read_text())["files"])
    assert rebuilt._documents is not bm25._documents and open_index(out).manifest["dense"] is None
    with pytest.raises(HopstackInputError, match="built without an embedder"):
        DenseRetriever(index=str(out), device="cpu").warm_up()


def _flip_a_byte(path):
    """Damage a file without changing its size."""
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_an_index_damaged_after_a_size_check_is_refused_when_verified(sparse_index, tmp_path):
    copy = _copy_index(sparse_index, tmp_path / "copy")
    open_index(copy, verify=False)
    sqlite = copy / "documents.sqlite"
    _flip_a_byte(sqlite)
    with pytest.raises(HopstackInputError, match=r"documents.sqlite: content does not match"):
        open_index(copy)


def test_a_crash_while_indexing_leaves_the_old_index_and_no_half_written_one(
    sparse_index, tmp_path, sample_corpus, monkeypatch
):
    out = _copy_index(sparse_index, tmp_path / "index")
    before = (out / "manifest.json").read_text()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed while saving BM25")

    monkeypatch.setattr("hopstack.index.store.save_sparse", crash)
    with pytest.raises(KeyboardInterrupt):
        build_index(sample_corpus, out, dense=None)
    assert (out / "manifest.json").read_text() == before
    open_index(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    with pytest.raises(KeyboardInterrupt):
        build_index(sample_corpus, tmp_path / "fresh", dense=None)
    assert not (tmp_path / "fresh").exists()


def test_a_folder_that_is_not_an_index_is_not_replaced(tmp_path, sample_corpus):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "thesis.txt").write_text("do not delete", encoding="utf-8")
    with pytest.raises(HopstackInputError, match="is not a hopstack index .*refusing to replace it"):
        build_index(sample_corpus, tmp_path / "precious", dense=None)
    assert (tmp_path / "precious" / "thesis.txt").exists()


@pytest.mark.slow
def test_dense_index_serves_the_retriever_and_refuses_another_embedder(tmp_path, sample_corpus, sample_questions):
    from hopstack.index.dense import DenseSettings

    out = tmp_path / "dense"
    build_index(sample_corpus, out, dense=DenseSettings(faiss="hnsw"), device="cpu")
    assert open_index(out).manifest["dense"]["dim"] == 384
    retriever = DenseRetriever(index=str(out), top_k=3, device="cpu")
    docs = retriever.run(query=sample_questions[2].question)["documents"]
    assert docs[0].meta["doc_id"] in sample_questions[2].gold_ids
    other = DenseRetriever(index=str(out), model="sentence-transformers/all-mpnet-base-v2", device="cpu")
    with pytest.raises(HopstackInputError, match="embedded with model 'minilm'.*asks for 'sentence-transformers"):
        other.warm_up()
    build_index(sample_corpus, tmp_path / "sparse", dense=None)
    with pytest.raises(HopstackInputError, match="built without an embedder"):
        DenseRetriever(index=str(tmp_path / "sparse"), device="cpu").warm_up()


def test_rank_bm25_okapi_ranks_like_bm25s_robertson(sample_corpus, sample_questions):
    """Same tokenisation, terms with positive idf: BM25Okapi = (k1 + 1) x bm25s robertson, same ranking.

    They differ only where a query term occurs in more than half of the documents: BM25Okapi then
    replaces the negative idf by 0.25 x the mean idf, bm25s robertson clamps it to 0.
    """
    from rank_bm25 import BM25Okapi

    retriever = BM25Retriever(index=str(sample_corpus), method="robertson", k1=1.5, b=0.75)
    retriever.warm_up()
    model = retriever._model
    corpus_tokens = model.tokenizer.decode(
        model.tokenizer.tokenize(
            [f"{d.meta['title']}. {d.content}" for d in retriever._documents], update_vocab=False, show_progress=False
        )
    )
    okapi = BM25Okapi(corpus_tokens, k1=1.5, b=0.75)
    compared = 0
    for question in sample_questions:
        tokens = model.tokenizer.decode(
            model.tokenizer.tokenize([question.question], update_vocab=False, show_progress=False)
        )[0]
        if any(sum(t in doc for doc in corpus_tokens) * 2 >= len(corpus_tokens) for t in tokens):
            continue
        reference = okapi.get_scores(tokens)
        ours = retriever.score_queries([question.question])[0]
        np.testing.assert_allclose(reference, 2.5 * ours, rtol=1e-4, atol=1e-4)
        assert list(np.argsort(-reference, kind="stable")[:5]) == list(np.argsort(-ours, kind="stable")[:5])
        compared += 1
    assert compared >= 20


def test_index_and_run_take_a_folder_of_markdown_and_jsonl_documents(cli, tmp_path):
    """The README's quickstart: a folder of .txt/.md/.jsonl files is indexed, or read in memory by --index."""
    folder = tmp_path / "my_documents"
    folder.mkdir()
    (folder / "looms.md").write_text("# Brannock Looms\nBrannock Looms was founded by Edda Varrow.\n", encoding="utf-8")
    (folder / "corpus.jsonl").write_text(
        '{"id": "d2", "title": "Edda Varrow", "text": "Edda Varrow was born in Hollin Ford.", "year": 1841}\n',
        encoding="utf-8",
    )
    code, _, err = cli("index", folder, "--out", tmp_path / "my-index", "--no-dense")
    assert code == 0 and "indexed 2 documents as 2 chunks" in err, err
    for index in (tmp_path / "my-index", folder):
        code, out, err = cli("run", YAML_DIR / "bm25.yaml", "--index", index, "-q", "Where was Edda Varrow born?")
        assert code == 0, err
        documents = json.loads(out)["outputs"]["bm25"]["documents"]
        assert [d["meta"]["doc_id"] for d in documents] == ["d2", "looms.md"] and documents[0]["meta"]["year"] == 1841


def test_index_command_builds_and_prints_info(cli, tmp_path, sample_corpus):
    out = tmp_path / "idx"
    code, _, err = cli("index", sample_corpus, "--out", out, "--no-dense", "--tokenizer", "words")
    assert code == 0, err
    assert "indexed 185 documents as 185 chunks" in err
    code, printed, _ = cli("index", "--info", out)
    assert code == 0 and json.loads(printed)["chunker"]["tokenizer"] == "words"
    code, _, err = cli("index", "--info", tmp_path)
    assert code == 2 and "not a hopstack index" in err
    assert os.listdir(tmp_path) == ["idx"]


def test_ivf_and_hnsw_indexes_search_like_flat():
    import faiss

    from hopstack.index.dense import DenseSettings, build_faiss, configure_search, search_parameters

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:20] + 0.01
    flat = build_faiss(vectors, DenseSettings(faiss="flat"))
    _, exact = flat.search(queries, 5)
    assert search_parameters(flat, ef_search=256, nprobe=64) is None
    for kind in ("hnsw", "ivf"):
        index = build_faiss(vectors, DenseSettings(faiss=kind))
        searched = index.hnsw if kind == "hnsw" else faiss.extract_index_ivf(index)
        setting = "efSearch" if kind == "hnsw" else "nprobe"
        before = getattr(searched, setting)
        _, per_call = index.search(queries, 5, params=search_parameters(index, ef_search=256, nprobe=64))
        assert getattr(searched, setting) == before, "per-call parameters leave a shared index as it was"
        configure_search(index, ef_search=256, nprobe=64)
        _, found = index.search(queries, 5)
        assert getattr(searched, setting) in (256, 64) and (per_call == found).all(), kind
        assert (found[:, 0] == exact[:, 0]).all(), kind
    with pytest.raises(ValueError, match="faiss index kind must be one of"):
        build_faiss(vectors, DenseSettings(faiss="pq"))


def test_only_a_folder_that_is_exactly_a_hopstack_index_is_replaced(tmp_path, sample_corpus):
    app = tmp_path / "app"  # a manifest.json of another tool beside other files
    (app / "src").mkdir(parents=True)
    (app / "manifest.json").write_text('{"name": "my-app"}', encoding="utf-8")
    (app / "app.js").write_text("alert(1)", encoding="utf-8")
    with pytest.raises(HopstackInputError, match="is not a hopstack index .*refusing to replace it"):
        build_index(sample_corpus, app, dense=None)
    assert (app / "app.js").exists() and (app / "src").is_dir()
    index = tmp_path / "index"
    build_index(sample_corpus, index, dense=None)
    (index / "notes.txt").write_text("mine", encoding="utf-8")  # an index with a file of the user's
    with pytest.raises(HopstackInputError, match="holds files its manifest does not list"):
        build_index(sample_corpus, index, dense=None)
    (index / "notes.txt").unlink()
    build_index(sample_corpus, index, dense=None)  # exactly an index: replaced
    with pytest.raises(HopstackInputError, match="exists and is not a folder"):
        build_index(sample_corpus, index / "manifest.json", dense=None)


def test_a_swap_cut_between_its_renames_is_reported_then_repaired(tmp_path, sample_corpus):
    index = tmp_path / "index"
    build_index(sample_corpus, index, dense=None)
    before = (index / "manifest.json").read_text()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)  # a process that has exited
    os.replace(index, tmp_path / f".index.old-{pid}")  # the crash: the old index moved aside, the new not in
    (tmp_path / f".index.building-{pid}").mkdir()  # and a killed build's folder
    with pytest.raises(HopstackInputError, match=r"missing; a build stopped while replacing it .*\.index\.old-"):
        open_index(index)
    done = recover_swap(index)  # what the next build does first
    assert len(done) == 2 and done[0].startswith(f"restored {index}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]
    assert (index / "manifest.json").read_text() == before
    open_index(index)
    build_index(sample_corpus, index, dense=None)


def test_a_manifest_whose_files_are_not_a_mapping_is_damaged(tmp_path, sample_corpus):
    index = tmp_path / "index"
    build_index(sample_corpus, index, dense=None)
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["files"] = list(manifest["files"])
    (index / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(HopstackInputError, match="damaged manifest .'files' must map each file"):
        open_index(index)
    with pytest.raises(HopstackInputError, match="is not a hopstack index .*refusing to replace it"):
        build_index(sample_corpus, index, dense=None)


def test_sharded_faiss_searches_as_one_index(tmp_path):
    from hopstack.index.dense import DenseSettings, build_faiss, load_faiss, search_parameters, shard_rows, write_faiss

    assert shard_rows(10, 3) == [(0, 3), (3, 7), (7, 10)] and shard_rows(2, 5) == [(0, 1), (1, 2)]
    assert shard_rows(7, 1) == [(0, 7)]
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(600, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:25] + 0.02
    scores, ids = build_faiss(vectors, DenseSettings()).search(queries, 10)
    for kind, shards in (("flat", 3), ("ivf", 2), ("hnsw", 2)):
        folder = tmp_path / kind
        folder.mkdir()
        assert write_faiss(vectors, DenseSettings(faiss=kind, shards=shards), folder) == shards
        assert sorted(p.name for p in folder.iterdir()) == [f"faiss-{i:03d}.index" for i in range(shards)]
        index = load_faiss(folder, shards)
        assert index.ntotal == 600
        found_scores, found = index.search(queries, 10, params=search_parameters(index, ef_search=600, nprobe=600))
        assert (found == ids).all(), kind  # exhaustive settings: the shards' merged top 10 is the exact top 10
        assert np.allclose(found_scores, scores, atol=1e-5), kind


def test_a_sharded_dense_index_retrieves_as_the_unsharded_one(tmp_path, sample_corpus, sample_questions):
    from hopstack.index.dense import DenseSettings

    build_index(sample_corpus, tmp_path / "one", device="cpu")
    manifest = build_index(sample_corpus, tmp_path / "three", dense=DenseSettings(shards=3), device="cpu")
    assert manifest["dense"]["shards"] == 3 and "dense/faiss-002.index" in manifest["files"]
    assert open_index(tmp_path / "one").manifest["dense"]["shards"] == 1
    one, three = (DenseRetriever(index=str(tmp_path / name), top_k=5, device="cpu") for name in ("one", "three"))
    questions = [q.question for q in sample_questions[:20]]
    for a, b in zip(one.run_batch(questions)["documents"], three.run_batch(questions)["documents"]):
        assert [d.id for d in a] == [d.id for d in b]
        assert np.allclose([d.score for d in a], [d.score for d in b], atol=1e-5)
