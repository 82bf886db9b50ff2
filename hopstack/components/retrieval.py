"""First-stage retrievers: BM25 (bm25s) and dense (sentence-transformers + FAISS).

Both index a JSONL corpus in memory at ``warm_up`` and search a whole batch of queries in one call.
Results are Haystack ``Document``s carrying the corpus id, content, meta and the retrieval score,
ordered by descending score (ties by corpus order).
"""

import threading
from typing import Any

import numpy as np
from haystack import Document, component

from hopstack.components.base import BatchComponent, batch_size_of
from hopstack.index.corpus import document_text, read_jsonl_corpus, resolve_index_path
from hopstack.models.devices import resolve_device
from hopstack.models.embedders import embed_texts, load_sentence_transformer

_BM25_METHODS = ("robertson", "lucene", "atire", "bm25l", "bm25+")


def _with_score(document: Document, score: float) -> Document:
    return Document(id=document.id, content=document.content, meta=dict(document.meta), score=float(score))


def _top_ks(top_k: list[int | None] | None, n: int, default: int) -> list[int]:
    values = [default] * n if top_k is None else [default if k is None else int(k) for k in top_k]
    if any(k < 1 for k in values):
        raise ValueError(f"top_k must be at least 1, got {min(values)}")
    return values


def _ranked(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first; ties keep corpus order (a stable sort)."""
    k = min(k, scores.shape[0])
    if k < scores.shape[0]:
        candidates = np.argpartition(-scores, k - 1)[:k]
        threshold = scores[candidates].min()
        candidates = np.flatnonzero(scores >= threshold)
    else:
        candidates = np.arange(scores.shape[0])
    order = np.argsort(-scores[candidates], kind="stable")
    return candidates[order][:k]


@component
class BM25Retriever(BatchComponent):
    """Sparse BM25 retrieval with bm25s; documents that share no term with the query are not returned.

    :param index: a JSONL corpus (``{"id", "title", "text", ...}`` per line); ``None`` reads
        ``$HOPSTACK_INDEX``.
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
        if method not in _BM25_METHODS:
            raise ValueError(f"method must be one of {', '.join(_BM25_METHODS)}; got {method!r}")
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
        self._bm25 = None
        self._tokenizer = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Read the corpus and build the BM25 index (once)."""
        with self._lock:
            if self._bm25 is not None:
                return
            import bm25s

            documents = read_jsonl_corpus(resolve_index_path(self.index))
            stemmer = None
            if self.stemmer:
                import Stemmer

                stemmer = Stemmer.Stemmer(self.stemmer)
            tokenizer = bm25s.tokenization.Tokenizer(stopwords=self.stopwords or [], stemmer=stemmer)
            corpus_ids = tokenizer.tokenize(
                [document_text(d, self.title_prefix) for d in documents], show_progress=False, return_as="ids"
            )
            bm25 = bm25s.BM25(k1=self.k1, b=self.b, method=self.method)
            bm25.index(corpus_ids, show_progress=False)
            self._documents, self._tokenizer, self._bm25 = documents, tokenizer, bm25

    def score_queries(self, queries: list[str]) -> np.ndarray:
        """BM25 scores of every corpus document for every query, shape (queries, documents)."""
        self.warm_up()
        token_ids = self._tokenizer.tokenize(queries, update_vocab=False, show_progress=False, return_as="ids")
        return np.vstack([self._bm25.get_scores(ids) for ids in token_ids]) if queries else np.zeros((0, 0))

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None) -> dict[str, Any]:
        """Retrieve the ``top_k`` best documents for one query."""
        return self.run_single(query=query, top_k=top_k)

    def run_batch(self, query: list[str], top_k: list[int | None] | None = None) -> dict[str, list[Any]]:
        """Retrieve for a batch of queries in one scoring pass."""
        n = batch_size_of({"query": query} if top_k is None else {"query": query, "top_k": top_k})
        ks = _top_ks(top_k, n, self.top_k)
        scores = self.score_queries(list(query))
        documents = [
            [_with_score(self._documents[i], row[i]) for i in _ranked(row, k) if row[i] > 0]
            for row, k in zip(scores, ks)
        ]
        return {"documents": documents}


@component
class DenseRetriever(BatchComponent):
    """Dense retrieval: a sentence-transformers embedder and a FAISS inner-product index.

    :param index: a JSONL corpus; ``None`` reads ``$HOPSTACK_INDEX``.
    :param model: a registry name (``minilm``), a Hugging Face id or a local path.
    :param top_k: documents returned per query unless the ``top_k`` input overrides it.
    :param device: ``auto | cpu | cuda | cuda:N``; ``auto`` uses the GPU when torch sees one, and the
        FAISS index moves to the GPU when faiss has GPU support.
    :param batch_size: embedding batch size.
    :param normalize: L2-normalise embeddings, so inner product is cosine similarity.
    :param title_prefix: embed ``"title. text"`` instead of the text alone.
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
    ):
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.index = index
        self.model = model
        self.top_k = top_k
        self.device = device
        self.batch_size = batch_size
        self.normalize = normalize
        self.title_prefix = title_prefix
        self._documents: list[Document] | None = None
        self._encoder = None
        self._faiss_index = None
        self._lock = threading.Lock()

    def warm_up(self) -> None:
        """Load the embedder, embed the corpus and build the FAISS index (once)."""
        with self._lock:
            if self._faiss_index is not None:
                return
            import faiss

            documents = read_jsonl_corpus(resolve_index_path(self.index))
            encoder = load_sentence_transformer(self.model, self.device)
            vectors = embed_texts(
                encoder, [document_text(d, self.title_prefix) for d in documents], self.batch_size, self.normalize
            )
            faiss_index = faiss.IndexFlatIP(vectors.shape[1])
            faiss_index.add(vectors)
            if resolve_device(self.device).startswith("cuda") and hasattr(faiss, "StandardGpuResources"):
                faiss_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, faiss_index)
            self._documents, self._encoder, self._faiss_index = documents, encoder, faiss_index

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None) -> dict[str, Any]:
        """Retrieve the ``top_k`` nearest documents for one query."""
        return self.run_single(query=query, top_k=top_k)

    def run_batch(self, query: list[str], top_k: list[int | None] | None = None) -> dict[str, list[Any]]:
        """Embed the whole batch of queries and search them in one FAISS call."""
        self.warm_up()
        n = batch_size_of({"query": query} if top_k is None else {"query": query, "top_k": top_k})
        ks = _top_ks(top_k, n, self.top_k)
        if n == 0:
            return {"documents": []}
        vectors = embed_texts(self._encoder, list(query), self.batch_size, self.normalize)
        scores, ids = self._faiss_index.search(vectors, min(max(ks), len(self._documents)))
        documents = [
            [_with_score(self._documents[i], s) for i, s in zip(row_ids[:k], row_scores[:k]) if i >= 0]
            for row_ids, row_scores, k in zip(ids, scores, ks)
        ]
        return {"documents": documents}
