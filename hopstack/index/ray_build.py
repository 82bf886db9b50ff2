"""Chunking and embedding a corpus on Ray Data (``hopstack index --ray``; docs/concepts/scale-out.md).

The driver reads the corpus (:func:`~hopstack.index.formats.read_corpus`) and hands its documents to Ray
Data, which chunks them on a pool of actors (one tokenizer each) and then embeds the chunks on a pool of
actors (``map_batches`` with a callable class: one model per actor, with the CPUs and GPUs that
:class:`~hopstack.core.ray_cluster.RaySettings` gives each). Both passes keep the rows' order, so the driver
assembles exactly the index the single-process build writes (:func:`~hopstack.index.store.build_index`):
the same chunk ids and texts, the same BM25 matrices, embeddings equal up to float rounding (batches of
different sizes are padded differently). The embeddings stream into a memory-mapped file as they arrive, so the
driver holds the chunks' texts and one FAISS shard at a time, never every embedding.
"""

import json
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from hopstack.core.ray_cluster import RaySettings, connect
from hopstack.core.text import indexed_text
from hopstack.index.chunking import Chunk, SentenceChunker
from hopstack.index.dense import DenseSettings
from hopstack.index.formats import SourceDocument

Progress = Callable[[str, int, int], None]
BLOCKS_PER_ACTOR = 4  # the data is cut into this many blocks an actor, so the actors share it evenly


class DocumentChunker:
    """The chunking actor: a :class:`SentenceChunker` (its tokenizer loaded once) over batches of documents."""

    def __init__(self, chunker: dict[str, Any], title_prefix: bool):
        self.chunker = SentenceChunker(**chunker)
        self.title_prefix = title_prefix

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        rows: dict[str, list] = {name: [] for name in ("document", "chunk", "indexed")}
        for number, doc_id, title, text, meta in zip(
            batch["document"], batch["id"], batch["title"], batch["text"], batch["meta"]
        ):
            document = SourceDocument(str(doc_id), str(title), str(text), json.loads(meta))
            for chunk in self.chunker.split(document):
                rows["document"].append(int(number))
                rows["chunk"].append(json.dumps(chunk.__dict__))
                rows["indexed"].append(indexed_text(chunk.title, chunk.text, self.title_prefix))
        return rows


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
    documents: list[SourceDocument],
    chunker: SentenceChunker,
    title_prefix: bool,
    settings: RaySettings,
    progress: Progress | None = None,
) -> tuple[list[Chunk], list[str]]:
    """The documents' chunks, in the single-process build's order, and their indexed texts (title-prefixed when
    asked), chunked on a pool of Ray actors."""
    connect(settings.address)
    actors = settings.actor_count()
    report = progress or (lambda stage, done, total: None)
    report("chunking", 0, len(documents))
    rows = [
        {"document": i, "id": d.id, "title": d.title, "text": d.text, "meta": json.dumps(d.meta, default=str)}
        for i, d in enumerate(documents)
    ]
    chunked = _dataset(rows, actors).map_batches(
        DocumentChunker,
        fn_constructor_kwargs={"chunker": chunker.settings(), "title_prefix": title_prefix},
        compute=_actor_pool(actors),
        batch_size=max(1, len(rows) // (actors * BLOCKS_PER_ACTOR) or 1),
        **settings.actor_options(),
    )
    chunks, texts = [], []
    for row in chunked.iter_rows():
        chunks.append(Chunk(**json.loads(row["chunk"])))
        texts.append(row["indexed"])
    report("chunking", len(documents), len(documents))
    return chunks, texts


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
