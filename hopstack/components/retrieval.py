"""First-stage retrievers: BM25 (bm25s) and dense (sentence-transformers + FAISS).

``index`` names an index folder built by ``hopstack index`` (chunks, a stored bm25s model, a FAISS
index) or a corpus file or folder in any format ``hopstack index`` reads, indexed in memory at
``warm_up`` with one document per source document. Each retriever searches a whole batch of queries in
one call and returns Haystack ``Document``s carrying the chunk id, content, meta (``doc_id``,
``title``, ...) and the retrieval score, best first.
"""

import threading
from collections.abc import Callable
from typing import Any

import numpy as np
from haystack import Document, component

from hopstack.core.batch import BatchComponent, batch_size_of
from hopstack.core.ranking import top_k_indices, top_ks, with_score
from hopstack.core.text import indexed_text
from hopstack.errors import HopstackInputError
from hopstack.index.corpus import corpus_documents, index_identity, resolve_index_path
from hopstack.index.dense import DenseSettings, build_faiss, search_parameters, to_device
from hopstack.index.sparse import BM25Settings, build_sparse, score_queries
from hopstack.index.store import IndexFolder, is_index, open_index
from hopstack.models.cache import call_cache
from hopstack.models.devices import resolve_device
from hopstack.models.embedders import embed_texts, load_sentence_transformer
from hopstack.models.onnx_backend import check_backend
from hopstack.models.registry import resolve_model


class _IndexReader(BatchComponent):
    """A batched component that reads the index named by its ``index`` init parameter."""

    retrieves = True  # the Retriever role (hopstack.core.roles)

    index: str | None
    extra_outputs: tuple[str, ...] = ()  # output sockets besides documents, one entry per query

    def content_identity(self) -> str:
        """The index this component reads (see :func:`index_identity`); part of its node fingerprint."""
        return index_identity(self.index)


@component
class BM25Retriever(_IndexReader):
    """Sparse BM25 retrieval with bm25s; documents that share no term with the query are not returned.

    :param index: an index folder or a corpus file; ``None`` reads ``$HOPSTACK_INDEX``. An index folder's
        stored BM25 model is used when it was built with the same ``k1``, ``b``, ``method``, ``stemmer``,
        ``stopwords`` and ``title_prefix``; otherwise its chunks are re-indexed in memory with these.
    :param top_k: documents returned per query unless the ``top_k`` input overrides it.
    :param k1: BM25 term-frequency saturation.
    :param b: BM25 length normalisation.
    :param method: bm25s variant: robertson, lucene (default), atire, bm25l, bm25+.
    :param stemmer: a PyStemmer language (``english``) or ``None`` for no stemming.
    :param stopwords: a bm25s stopword list name (``en``) or ``None``.
    :param title_prefix: index ``"title. text"`` instead of the text alone.
    """

    def __init__(
        self,
        index: str | None = None,
        top_k: int = 10,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stemmer: str | None = "english",
        stopwords: str | None = "en",
        title_prefix: bool = True,
    ):
        BM25Settings(k1, b, method, stemmer, stopwords)  # refuses k1 < 0, b outside [0, 1], an unknown method
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.index = index
        self.top_k = top_k
        self.k1 = k1
        self.b = b
        self.method = method
        self.stemmer = stemmer
        self.stopwords = stopwords
        self.title_prefix = title_prefix
        self._documents: list[Document] | None = None
        self._model = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load (or build) the BM25 model and the documents (once)."""
        with self._lock:
            if self._model is not None:
                return
            settings = BM25Settings(self.k1, self.b, self.method, self.stemmer, self.stopwords)
            path = resolve_index_path(self.index)
            if is_index(path):
                folder = open_index(path)
                documents = folder.documents()
                if folder.bm25_settings == settings and folder.title_prefix == self.title_prefix:
                    self._documents, self._model = documents, folder.sparse()
                    return
            else:
                documents = corpus_documents(path)
            texts = [indexed_text(d.meta.get("title", ""), d.content, self.title_prefix) for d in documents]
            self._documents, self._model = documents, build_sparse(texts, settings)

    def score_queries(self, queries: list[str]) -> np.ndarray:
        """BM25 scores of every document for every query, shape (queries, documents)."""
        self.warm_up()
        return score_queries(self._model, queries)

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None) -> dict[str, Any]:
        """Retrieve the ``top_k`` best documents for one query."""
        return self.run_single(query=query, top_k=top_k)

    def run_batch(self, query: list[str], top_k: list[int | None] | None = None) -> dict[str, list[Any]]:
        """Retrieve for a batch of queries: one sparse scoring pass and one top-k selection per row block."""
        self.warm_up()
        n = batch_size_of({"query": query} if top_k is None else {"query": query, "top_k": top_k})
        ks = top_ks(top_k, n, self.top_k)
        extra: dict[str, list[Any]] = {name: [] for name in self.extra_outputs}

        def block_scores(start: int, stop: int) -> np.ndarray:
            scores, block_extra = self._block_scores(list(query[start:stop]))
            for name, values in block_extra.items():
                extra[name].extend(values)
            return scores

        return {"documents": self._ranked(block_scores, ks), **extra}

    def _block_scores(self, queries: list[str]) -> tuple[np.ndarray, dict[str, list[Any]]]:
        """Scores of every document for a block of queries and, per query, the ``extra_outputs`` (a
        subclass such as RM3 changes the query here)."""
        return self.score_queries(queries), {}

    def _ranked(self, score_rows: Callable[[int, int], np.ndarray], ks: list[int]) -> list[list[Document]]:
        """The ``ks[i]`` best documents (score > 0) of each of ``len(ks)`` queries, best first, where
        ``score_rows(start, stop)`` scores queries ``start:stop`` against every document; blocks of rows
        keep the dense scores of a block under ~64 MB."""
        block = max(1, (1 << 24) // len(self._documents))
        documents: list[list[Document]] = []
        for start in range(0, len(ks), block):
            stop = min(start + block, len(ks))
            scores = score_rows(start, stop)
            ranked = top_k_indices(scores, max(ks[start:stop]))
            for row, columns, k in zip(scores, ranked, ks[start:stop]):
                columns = columns[:k]
                documents.append(
                    [
                        with_score(self._documents[c], v)
                        for c, v in zip(columns.tolist(), row[columns].tolist())
                        if v > 0
                    ]
                )
        return documents


@component
class DenseRetriever(_IndexReader):
    """Dense retrieval: a sentence-transformers embedder and a FAISS inner-product index.

    :param index: an index folder (whose embedder must be ``model``) or a corpus file embedded in memory
        into a flat index; ``None`` reads ``$HOPSTACK_INDEX``.
    :param model: a registry name (``minilm``), a Hugging Face id or a local path.
    :param top_k: documents returned per query unless the ``top_k`` input overrides it.
    :param device: ``auto | cpu | cuda | cuda:N``; ``auto`` uses the GPU when torch sees one, and the
        FAISS index moves to the GPU when faiss has GPU support.
    :param batch_size: embedding batch size.
    :param normalize: L2-normalise embeddings, so inner product is cosine similarity.
    :param title_prefix: embed ``"title. text"`` (corpora embedded in memory; an index keeps its own).
    :param ef_search: HNSW search breadth (HNSW indexes only).
    :param nprobe: IVF cells visited per query (IVF indexes only).
    :param cache: keep query embeddings in the on-disk call cache (``HOPSTACK_CACHE=off`` overrides).
    :param backend: ``torch | onnx | onnx-int8 | auto`` for the embedder (docs/concepts/backends.md); an
        index embedded with another backend is read as it is (the vectors agree to a cosine of about 0.99).
    """

    def __init__(
        self,
        index: str | None = None,
        model: str = "minilm",
        top_k: int = 10,
        device: str = "auto",
        batch_size: int = 64,
        normalize: bool = True,
        title_prefix: bool = True,
        ef_search: int = 128,
        nprobe: int = 16,
        cache: bool = True,
        backend: str = "torch",
    ):
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.index = index
        self.model = model
        self.backend = check_backend(backend)
        self.top_k = top_k
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self.title_prefix = title_prefix
        self.ef_search = ef_search
        self.nprobe = nprobe
        self.cache = cache
        self._call_cache = None
        self._documents: list[Document] | None = None
        self._encoder = None
        self._folder: IndexFolder | None = None  # the index folder read, None for a corpus embedded in memory
        self._faiss_index = None
        self._search_params = None
        self._lock = threading.Lock()

    def _check_embedder(self, path, settings: DenseSettings | None) -> None:
        if settings is None:
            raise HopstackInputError(f"{path}: the index was built without an embedder (--no-dense)")
        same_model = settings.model == self.model or resolve_model(settings.model) == resolve_model(self.model)
        if not same_model or settings.normalize != self.normalize:
            raise HopstackInputError(
                f"{path}: the index was embedded with model {settings.model!r} (normalize={settings.normalize}); "
                f"this retriever asks for {self.model!r} (normalize={self.normalize}). Rebuild the index with "
                f"`hopstack index --embedder {self.model}` or set the retriever's model to {settings.model!r}"
            )

    def warm_up(self) -> None:
        """Load the embedder and the FAISS index, or embed an in-memory corpus (once)."""
        with self._lock:
            if self._faiss_index is not None:
                return
            path = resolve_index_path(self.index)
            encoder = None
            if is_index(path):
                self._folder = open_index(path)
                self._check_embedder(path, self._folder.dense_settings)
                documents, faiss_index = self._folder.documents(), self._folder.faiss()
            else:
                documents = corpus_documents(path)
                encoder = load_sentence_transformer(self.model, self.device, self.backend)
                texts = [indexed_text(d.meta.get("title", ""), d.content, self.title_prefix) for d in documents]
                # through the call cache: the variants of a comparison that read the same corpus file embed it once
                vectors = embed_texts(
                    encoder, texts, self.batch_size, self.normalize, cache=call_cache(self.cache), model_id=self.model
                )
                faiss_index = build_faiss(vectors, DenseSettings(model=self.model, normalize=self.normalize))
            self._search_params = search_parameters(faiss_index, self.ef_search, self.nprobe)
            self._encoder = encoder or load_sentence_transformer(self.model, self.device, self.backend)
            self._call_cache = call_cache(self.cache)
            self._documents = documents
            self._faiss_index = to_device(faiss_index, resolve_device(self.device))

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None) -> dict[str, Any]:
        """Retrieve the ``top_k`` nearest documents for one query."""
        return self.run_single(query=query, top_k=top_k)

    def run_batch(self, query: list[str], top_k: list[int | None] | None = None) -> dict[str, list[Any]]:
        """Embed the whole batch of queries and search them in one FAISS call."""
        self.warm_up()
        n = batch_size_of({"query": query} if top_k is None else {"query": query, "top_k": top_k})
        ks = top_ks(top_k, n, self.top_k)
        if n == 0:
            return {"documents": [], **{name: [] for name in self.extra_outputs}}
        vectors, extra = self._query_vectors(self.embed_queries(query))
        return {"documents": self._search(vectors, ks), **extra}

    def _query_vectors(self, vectors: np.ndarray) -> tuple[np.ndarray, dict[str, list[Any]]]:
        """The vectors searched for these query embeddings and, per query, the ``extra_outputs`` (a
        subclass such as vector PRF changes the vectors here)."""
        return vectors, {}

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        """The queries' embeddings, one float32 row each (through the call cache when ``cache``)."""
        self.warm_up()
        return embed_texts(
            self._encoder, list(queries), self.batch_size, self.normalize, cache=self._call_cache, model_id=self.model
        )

    def faiss_search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """FAISS's scores and document ids of the ``k`` nearest documents of each vector, with this
        retriever's ``ef_search``/``nprobe`` (the index itself may be shared)."""
        return self._faiss_index.search(vectors, k, params=self._search_params)

    def _search(self, vectors: np.ndarray, ks: list[int]) -> list[list[Document]]:
        """The ``ks[i]`` nearest documents of each query vector, in one FAISS search."""
        scores, ids = self.faiss_search(vectors, min(max(ks), len(self._documents)))
        return [
            [with_score(self._documents[i], s) for i, s in zip(row_ids[:k], row_scores[:k]) if i >= 0]
            for row_ids, row_scores, k in zip(ids, scores, ks)
        ]
