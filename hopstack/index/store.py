"""The index folder (docs/concepts/index-folder.md), built once by ``hopstack index`` and read by the retrievers.

```
DIR/manifest.json          format version, corpus hash, chunker, embedder, counts, every file's size and sha256
DIR/documents.sqlite       the chunks: id, source document id, title, text, position, offsets, metadata
DIR/bm25/                  the bm25s model and its tokenizer vocabulary
DIR/dense/                 faiss.index (or faiss-000.index, ... when sharded) and embeddings.npy (absent when built
                           without an embedder)
```

Writes are atomic: everything goes into a hidden sibling folder that is renamed into place only when
complete, so a crash leaves the previous index (or none) and a stray ``.DIR.building-*`` folder, never
a half-written index. Reading checks the manifest's version and every file's size and hash, and
refuses a damaged or mismatched index with a message that names the file. A process opens and checks
each folder once (:func:`open_index`); the retrievers that read it share its parts.
"""

import hashlib
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from haystack import Document

from hopstack.core.files import file_sha256
from hopstack.core.ray_cluster import RaySettings
from hopstack.core.text import indexed_text
from hopstack.errors import HopstackInputError
from hopstack.index.chunking import Chunk, SentenceChunker
from hopstack.index.dense import DenseSettings, EmbeddingsFile, load_embeddings, load_faiss, write_faiss
from hopstack.index.formats import corpus_files, detect_format, read_corpus
from hopstack.index.sparse import BM25Settings, SparseModel, build_sparse, load_sparse, save_sparse

FORMAT_VERSION = 1
DEFAULT_DENSE = DenseSettings()
MANIFEST = "manifest.json"
# manifest entries that record how a build went, not what the index holds (left out of content_digest)
BUILD_RECORD = ("created", "build_seconds", "stage_seconds")
Progress = Callable[[str, int, int], None]


def _write_documents(path: Path, chunks: list[Chunk]) -> None:
    db = sqlite3.connect(path)
    try:
        db.execute(
            "CREATE TABLE chunks (row INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, doc_id TEXT NOT NULL, "
            "title TEXT, text TEXT NOT NULL, position INTEGER, start INTEGER, end INTEGER, meta TEXT)"
        )
        db.executemany(
            "INSERT INTO chunks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (row, c.id, c.doc_id, c.title, c.text, c.position, c.start, c.end, json.dumps(c.meta, default=str))
                for row, c in enumerate(chunks)
            ),
        )
        db.commit()
    finally:
        db.close()


def build_index(
    source: str | Path,
    out: str | Path,
    corpus_format: str | None = None,
    chunker: SentenceChunker | None = None,
    title_prefix: bool = True,
    bm25: BM25Settings | None = None,
    dense: DenseSettings | None = DEFAULT_DENSE,
    device: str = "auto",
    batch_size: int = 64,
    progress: Progress | None = None,
    ray: RaySettings | None = None,
) -> dict[str, Any]:
    """Read, chunk and index a corpus into the folder ``out``; returns the manifest.

    ``dense=None`` builds a BM25-only index. ``progress(stage, done, total)`` is called as work advances.
    With ``ray`` settings the reading (of a folder's files), the chunking and the embedding run on Ray Data
    (:mod:`hopstack.index.ray_build`) and give the same index.
    """
    from hopstack.models.embedders import embed_texts, load_sentence_transformer
    from hopstack.models.onnx_backend import loaded_backend

    source, out = Path(source), Path(out)
    chunker = chunker or SentenceChunker()
    bm25 = bm25 or BM25Settings()
    report = progress or (lambda stage, done, total: None)
    recover_swap(out)
    refusal = _not_replaceable(out)
    if refusal:
        raise HopstackInputError(f"{out}: {refusal}; refusing to replace it (choose another --out)")
    started = time.time()
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[stage] = round(now - clock, 3)
        clock = now

    corpus_format = corpus_format or detect_format(source)
    if ray is None:
        documents = read_corpus(source, corpus_format)
        lap("reading")
        chunks: list[Chunk] = []
        for i, document in enumerate(documents, start=1):
            chunks.extend(chunker.split(document))
            report("chunking", i, len(documents))
        document_count = len(documents)
    else:
        from hopstack.index.ray_build import ray_chunks

        document_count, chunks = ray_chunks(source, corpus_format, chunker, ray, report)
    if not chunks:
        raise HopstackInputError(f"{source}: the corpus has no text to index")
    texts = [indexed_text(c.title, c.text, title_prefix) for c in chunks]
    lap("chunking")

    building = out.parent / f".{out.name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        _write_documents(building / "documents.sqlite", chunks)
        lap("documents")
        report("bm25", 0, 1)
        save_sparse(build_sparse(texts, bm25), building / "bm25")
        report("bm25", 1, 1)
        lap("bm25")
        dim = None
        if dense is not None:
            embeddings = EmbeddingsFile(building / "dense" / "embeddings.npy", len(texts))
            if ray is None:
                encoder = load_sentence_transformer(dense.model, device, dense.backend)
                lap("embedder_load")
                for start in range(0, len(texts), batch_size * 8):
                    block = texts[start : start + batch_size * 8]
                    rows = np.arange(start, start + len(block))
                    embeddings.write(rows, embed_texts(encoder, block, batch_size, dense.normalize))
                    report("embedding", start + len(block), len(texts))
                backend = loaded_backend(encoder)
            else:
                from hopstack.index.ray_build import ray_embeddings

                backend = ray_embeddings(texts, dense, device, batch_size, ray, embeddings.write, report)
            vectors = embeddings.finish()
            lap("embedding")
            dense = replace(dense, shards=write_faiss(vectors, dense, building / "dense"))
            dim = int(vectors.shape[1])
            del vectors, embeddings  # the memory map is closed before the folder is hashed and moved
            lap("faiss")
        manifest = {
            "format_version": FORMAT_VERSION,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.time() - started, 2),
            "stage_seconds": seconds,
            "source": {
                "path": str(source.resolve()),
                "format": corpus_format,
                "sha256": corpus_hash(source),
            },
            "chunker": chunker.settings(),
            "title_prefix": title_prefix,
            "counts": {"documents": document_count, "chunks": len(chunks)},
            "bm25": bm25.to_dict(),
            "dense": None if dense is None else {**dense.to_dict(), "backend": backend, "dim": dim},
            "files": {
                str(p.relative_to(building).as_posix()): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
                for p in sorted(building.rglob("*"))
                if p.is_file()
            },
        }
        (building / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        _swap_into_place(building, out)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return manifest


def corpus_hash(source: Path) -> str:
    """The sha256 of a corpus file, or of a folder's files and the relative paths of its .txt/.md files (their
    document ids; a .jsonl file's documents carry their own, so a folder holding just corpus.jsonl hashes as that
    file), as manifests record it."""
    digest = hashlib.sha256()
    for path in corpus_files(source):
        named = source.is_dir() and path.suffix.lower() != ".jsonl"
        digest.update(path.relative_to(source).as_posix().encode() if named else b"")
        digest.update(file_sha256(path).encode())
    return digest.hexdigest()


def _swap_into_place(building: Path, out: Path) -> None:
    """Rename the finished folder to ``out``; an old index there is moved aside first, then removed. A crash
    between the two renames leaves the old index in ``.NAME.old-PID``, which :func:`recover_swap` restores."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(building, out)
    shutil.rmtree(old, ignore_errors=True)


def _not_replaceable(out: Path) -> str | None:
    """Why ``out`` may not be replaced by a new index, or None: it may be missing, an empty folder, or a
    hopstack index whose manifest parses and lists exactly the files the folder holds."""
    if not out.exists():
        return None
    if not out.is_dir():
        return "exists and is not a folder"
    present = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    if not present and not any(out.iterdir()):
        return None
    try:
        manifest = _parse_manifest(out / MANIFEST, (out / MANIFEST).read_bytes())
    except (OSError, HopstackInputError):
        return "exists and is not a hopstack index (no readable manifest of this format)"
    listed = manifest.get("files")
    if not isinstance(listed, dict) or present != {*listed, MANIFEST}:
        return "holds files its manifest does not list (or lacks some it lists), so it is not only a hopstack index"
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_swap(out: Path) -> list[str]:
    """Repair what a crashed build left beside ``out`` (only folders of processes that are no longer
    running): restore ``.NAME.old-PID`` when ``out`` is missing (the crash came between the two renames),
    else remove it; remove ``.NAME.building-PID``. Returns what it did, one line each."""
    done = []
    for kind in ("old", "building"):
        for leftover in sorted(out.parent.glob(f".{out.name}.{kind}-*")):
            pid = leftover.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
                continue
            if kind == "old" and not out.exists():
                os.replace(leftover, out)
                done.append(f"restored {out} from {leftover.name}, left by a build that stopped while replacing it")
            else:
                shutil.rmtree(leftover, ignore_errors=True)
                done.append(f"removed {leftover.name}, left by a build that stopped")
    return done


class IndexFolder:
    """A checked index folder; its parts load on demand, each once, and are shared by every reader.

    Get one with :func:`open_index`, which keeps one per folder and process.
    """

    def __init__(self, path: Path, manifest: dict[str, Any], manifest_bytes: bytes):
        self.path = path
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self._lock = threading.RLock()
        self._parts: dict[str, Any] = {}
        self._sizes_checked = False
        self._hashes_checked = False

    @property
    def bm25_settings(self) -> BM25Settings:
        """The BM25 settings the stored model was built with."""
        return BM25Settings(**self.manifest["bm25"])

    @property
    def dense_settings(self) -> DenseSettings | None:
        """How the chunks were embedded, ``None`` for an index built without an embedder."""
        dense = self.manifest.get("dense")
        if dense is None:
            return None
        return DenseSettings(**{k: v for k, v in dense.items() if k != "dim"})

    @property
    def title_prefix(self) -> bool:
        """Whether chunks were indexed as ``"title. text"``."""
        return bool(self.manifest.get("title_prefix", True))

    def check(self, hashes: bool = True) -> None:
        """Refuse a missing or resized file, and with ``hashes`` one whose sha256 is not the manifest's;
        each check runs once (the hashes after the sizes, when first asked for)."""
        with self._lock:
            if self._hashes_checked or (self._sizes_checked and not hashes):
                return
            for name, expected in self.manifest.get("files", {}).items():
                file = self.path / name
                if not file.is_file():
                    raise HopstackInputError(f"{file}: missing from the index; rebuild it")
                size = file.stat().st_size
                if size != expected["bytes"]:
                    raise HopstackInputError(
                        f"{file}: {size} bytes, the manifest says {expected['bytes']} (truncated or replaced); rebuild"
                    )
                if hashes and file_sha256(file) != expected["sha256"]:
                    raise HopstackInputError(
                        f"{file}: content does not match the manifest's sha256 (corrupted); rebuild"
                    )
            self._sizes_checked = True
            self._hashes_checked = hashes

    def _part(self, name: str, load: Callable[[], Any]) -> Any:
        """The part ``name``, loaded by ``load`` the first time it is asked for."""
        with self._lock:
            if name not in self._parts:
                self._parts[name] = load()
            return self._parts[name]

    def documents(self) -> list[Document]:
        """Every chunk as a Haystack Document (id, text, and meta with doc_id, title, position); one list
        shared by every reader, not to be changed."""
        return self._part("documents", self._read_documents)

    def _read_documents(self) -> list[Document]:
        try:
            db = sqlite3.connect(f"file:{self.path / 'documents.sqlite'}?mode=ro", uri=True)
            rows = db.execute("SELECT id, doc_id, title, text, position, meta FROM chunks ORDER BY row").fetchall()
            db.close()
        except sqlite3.Error as exc:
            raise HopstackInputError(f"{self.path / 'documents.sqlite'}: unreadable ({exc})") from exc
        return [
            Document(
                id=chunk_id,
                content=text,
                meta={**json.loads(meta or "{}"), "doc_id": doc_id, "title": title, "position": position},
            )
            for chunk_id, doc_id, title, text, position, meta in rows
        ]

    def sparse(self) -> SparseModel:
        """The stored bm25s model (built with :attr:`bm25_settings`)."""
        return self._part("sparse", lambda: load_sparse(self.path / "bm25", self.bm25_settings))

    def faiss(self):
        """The stored FAISS index, shared: search it with per-call parameters (see
        :func:`~hopstack.index.dense.search_parameters`) rather than changing it."""
        return self._part("faiss", lambda: load_faiss(self._dense_folder(), self.dense_settings.shards))

    def embeddings(self) -> np.ndarray:
        """The stored document embeddings, one row per chunk, memory-mapped (read-only)."""
        return self._part("embeddings", lambda: load_embeddings(self._dense_folder()))

    def _dense_folder(self) -> Path:
        if self.manifest.get("dense") is None:
            raise HopstackInputError(f"{self.path}: built without an embedder (hopstack index --no-dense)")
        return self.path / "dense"


def is_index(path: str | Path) -> bool:
    """Whether ``path`` is a folder with a manifest (checked or not)."""
    return Path(path).is_dir() and (Path(path) / MANIFEST).is_file()


def content_digest(path: str | Path) -> str:
    """A digest of what an index folder holds: its manifest (every file's sha256, the source corpus's sha256
    and the build settings) without the build record (:data:`BUILD_RECORD`) or the source corpus's path, so
    rebuilding the same index, or copying it elsewhere, keeps the digest; a damaged manifest is refused."""
    manifest_path = Path(path) / MANIFEST
    manifest = _parse_manifest(manifest_path, manifest_path.read_bytes())
    content = {key: value for key, value in manifest.items() if key not in BUILD_RECORD}
    content["source"] = {key: value for key, value in (content.get("source") or {}).items() if key != "path"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


_OPENED: dict[Path, IndexFolder] = {}
_OPENED_LOCK = threading.Lock()


def open_index(path: str | Path, verify: bool = True) -> IndexFolder:
    """Open an index folder, refusing a missing, mismatched or damaged one with a clear message.

    One :class:`IndexFolder` per resolved path and process is shared by every caller, so its parts load
    once; a folder whose manifest changed (rebuilt in place) is opened afresh. Every file's size is
    checked against the manifest, and with ``verify`` its sha256, once per opened folder.
    """
    path = Path(path)
    manifest_path = path / MANIFEST
    stranded = sorted(path.parent.glob(f".{path.name}.old-*")) if not path.exists() else []
    if stranded:
        raise HopstackInputError(
            f"{path}: missing; a build stopped while replacing it and left the previous index in {stranded[0]}; "
            f"the next `hopstack index --out {path}` restores it (or rename it back)"
        )
    if not manifest_path.is_file():
        raise HopstackInputError(f"{path}: not a hopstack index (no {MANIFEST}); build one with `hopstack index`")
    manifest_bytes = manifest_path.read_bytes()
    key = path.resolve()
    with _OPENED_LOCK:
        folder = _OPENED.get(key)
        if folder is None or folder.manifest_bytes != manifest_bytes:
            folder = IndexFolder(path, _parse_manifest(manifest_path, manifest_bytes), manifest_bytes)
            _OPENED[key] = folder
    folder.check(hashes=verify)
    return folder


def _parse_manifest(manifest_path: Path, manifest_bytes: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HopstackInputError(f"{manifest_path}: damaged manifest ({exc})") from exc
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("sha256"), str)
        for v in files.values()
    ):
        raise HopstackInputError(
            f"{manifest_path}: damaged manifest ('files' must map each file to its bytes and sha256)"
        )
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise HopstackInputError(
            f"{manifest_path.parent}: index format version {version!r}, this hopstack reads version "
            f"{FORMAT_VERSION}; rebuild it"
        )
    return manifest
