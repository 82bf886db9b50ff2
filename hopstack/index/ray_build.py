"""Reading, chunking and embedding a corpus on Ray Data (``hopstack index --ray``; docs/concepts/scale-out.md).

A folder corpus is read in parallel, file by file, by Ray Data tasks; a corpus of one file is read by the
driver (:func:`~hopstack.index.formats.read_corpus`). Ray Data chunks the documents on a pool of actors (one
tokenizer each), then embeds the chunks on a pool of actors (``map_batches`` with a callable class: one model
per actor, with the CPUs and GPUs that :class:`~hopstack.core.ray_cluster.RaySettings` gives each). Both
passes keep the rows' order, so the driver assembles exactly the index the single-process build writes
(:func:`~hopstack.index.store.build_index`): the same chunk ids and texts, the same BM25 matrices, embeddings
equal up to float rounding (batches of different sizes are padded differently). The embeddings stream into a
memory-mapped file as they arrive, so the driver holds the chunks' texts and one FAISS shard at a time, never
every embedding.
"""

import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hopstack.core.ray_cluster import RaySettings, connect
from hopstack.errors import HopstackInputError
from hopstack.index.chunking import Chunk, SentenceChunker
from hopstack.index.dense import DenseSettings
from hopstack.index.formats import SourceDocument, folder_file_documents, folder_files, read_corpus, unique_documents

Progress = Callable[[str, int, int], None]
BLOCKS_PER_ACTOR = 4  # the data is cut into this many blocks an actor, so the actors share it evenly


def _read_files(batch: dict[str, np.ndarray], folder: str) -> dict[str, list]:
    """The documents of a batch of a folder corpus's files (:func:`folder_file_documents`), with each one's file
    number. A file that cannot be read gives one row whose ``error`` says why (naming the file and line), which
    the driver raises: an exception raised here would reach it only as Ray's wrapper of a traceback."""
    rows: dict[str, list] = {name: [] for name in ("file", "id", "title", "text", "meta", "error")}

    def add(number: int, document: SourceDocument, error: str = "") -> None:
        for name, value in zip(rows, (number, document.id, document.title, document.text, document.meta, error)):
            rows[name].append(json.dumps(value, default=str) if name == "meta" else value)

    for number, file in zip(batch["file_number"], batch["file"]):
        try:
            for document in folder_file_documents(Path(str(file)), Path(folder)):
                add(int(number), document)
        except HopstackInputError as exc:
            add(int(number), SourceDocument("", "", ""), str(exc))
    return rows


class DocumentChunker:
    """The chunking actor: a :class:`SentenceChunker` (its tokenizer loaded once) over batches of documents;
    one row a document, with its chunks as a JSON list."""

    def __init__(self, chunker: dict[str, Any]):
        self.chunker = SentenceChunker(**chunker)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows: dict[str, list] = {"file": list(batch["file"]), "error": list(batch["error"]), "id": [], "chunks": []}
        for doc_id, title, text, meta, error in zip(
            batch["id"], batch["title"], batch["text"], batch["meta"], batch["error"]
        ):
            document = SourceDocument(str(doc_id), str(title), str(text), json.loads(meta))
            chunks = [] if error else self.chunker.split(document)
            rows["id"].append(str(doc_id))
            rows["chunks"].append(json.dumps([chunk.__dict__ for chunk in chunks]))
        return rows


@dataclass
class ChunkedDocument:
    """One document's chunks, as the chunking actors return them."""

    id: str
    chunks: list[Chunk]


class ChunkEmbedder:
    """The embedding actor: one sentence-transformers model, loaded once, over batches of texts."""

    def __init__(self, dense: dict[str, Any], device: str, batch_size: int):
        from hopstack.models.embedders import load_sentence_transformer

        self.settings = DenseSettings(**dense)
        self.batch_size = batch_size
        self.encoder = load_sentence_transformer(self.settings.model, device, self.settings.backend)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from hopstack.models.embedders import embed_texts
        from hopstack.models.onnx_backend import loaded_backend

        texts = [str(t) for t in batch["text"]]
        vectors = embed_texts(self.encoder, texts, self.batch_size, self.settings.normalize)
        return {"row": batch["row"], "embedding": list(vectors), "backend": [loaded_backend(self.encoder)] * len(texts)}


def _dataset(rows: list[dict[str, Any]], actors: int):
    import ray
    import ray.data  # sets up its loggers, whose console lines (each dataset's start and end) we quiet here

    for handler in logging.getLogger("ray.data").handlers:  # what they say stays in Ray's session log files
        if isinstance(handler, logging.StreamHandler):
            handler.setLevel(logging.ERROR)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    return ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), actors * BLOCKS_PER_ACTOR)))


def _actor_pool(actors: int):
    import ray

    return ray.data.ActorPoolStrategy(size=actors)


def ray_chunks(
    source: Path,
    corpus_format: str,
    chunker: SentenceChunker,
    settings: RaySettings,
    progress: Progress | None = None,
) -> tuple[int, list[Chunk]]:
    """Read and chunk the corpus on Ray (a folder's files in parallel); returns the number of documents and
    their chunks in the single-process build's order. Refuses a duplicate document id or an empty corpus as
    :func:`read_corpus` does."""
    connect(settings.address)
    actors = settings.actor_count()
    report = progress or (lambda stage, done, total: None)
    if corpus_format == "folder":
        files = folder_files(source)
        total = len(files)
        documents = _dataset([{"file_number": i, "file": str(f)} for i, f in enumerate(files)], actors).map_batches(
            _read_files, fn_kwargs={"folder": str(source)}, batch_size=1, num_cpus=settings.cpus_per_actor
        )
        batch_size = 64
    else:
        read = read_corpus(source, corpus_format)
        total = len(read)
        rows = [
            {"file": i, "id": d.id, "title": d.title, "text": d.text, "meta": json.dumps(d.meta, default=str)}
            | {"error": ""}
            for i, d in enumerate(read)
        ]  # one "file" a document: progress counts documents
        documents = _dataset(rows, actors)
        batch_size = max(1, len(rows) // (actors * BLOCKS_PER_ACTOR))
    chunked = documents.map_batches(
        DocumentChunker,
        fn_constructor_kwargs={"chunker": chunker.settings()},
        compute=_actor_pool(actors),
        batch_size=batch_size,
        **settings.actor_options(),
    )
    stage = "reading and chunking" if corpus_format == "folder" else "chunking"
    report(stage, 0, total)

    def arriving() -> Iterator[ChunkedDocument]:
        for row in chunked.iter_rows():
            if row["error"]:
                raise HopstackInputError(row["error"])
            report(stage, int(row["file"]) + 1, total)
            yield ChunkedDocument(row["id"], [Chunk(**fields) for fields in json.loads(row["chunks"])])

    kept = unique_documents(source, corpus_format, arriving())
    return len(kept), [c for d in kept for c in d.chunks]


def ray_embeddings(
    texts: list[str],
    dense: DenseSettings,
    device: str,
    batch_size: int,
    settings: RaySettings,
    write: Callable[[np.ndarray, np.ndarray], None],
    progress: Progress | None = None,
) -> str:
    """Embed the texts on a pool of Ray actors, passing each batch's rows and float32 vectors to ``write`` as
    they arrive (:class:`~hopstack.index.dense.EmbeddingsFile` stores them without holding them all); returns
    the backend the actors ran the model on."""
    connect(settings.address)
    actors = settings.actor_count()
    report = progress or (lambda stage, done, total: None)
    report("embedding", 0, len(texts))
    embedded = _dataset([{"row": i, "text": t} for i, t in enumerate(texts)], actors).map_batches(
        ChunkEmbedder,
        fn_constructor_kwargs={"dense": dense.to_dict(), "device": device, "batch_size": batch_size},
        compute=_actor_pool(actors),
        batch_size=batch_size * 8,
        **settings.actor_options(),
    )
    backend = dense.backend
    done = 0
    for batch in embedded.iter_batches(batch_size=batch_size * 8, batch_format="numpy"):
        write(batch["row"].astype(np.int64), np.stack(list(batch["embedding"])).astype(np.float32, copy=False))
        backend = str(batch["backend"][0])
        done += len(batch["row"])
        report("embedding", done, len(texts))
    return backend
