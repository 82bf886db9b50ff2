"""First-stage retrievers: BM25 (bm25s) and dense (sentence-transformers + FAISS).

Both index a JSONL corpus in memory at ``warm_up`` and search a whole batch of queries in one call.
Results are Haystack ``Document``s carrying the corpus id, content, meta and the retrieval score,
ordered by descending score (ties by corpus order).
"""

import itertools
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
    """A copy of a corpus document that carries ``score`` (and a meta dict of its own).

    The copy is made like ``copy.copy`` does, without Document's ``__init__``, which re-validates every
    field and costs several microseconds a document: at tens of thousands of results a batch that is
    most of a BM25 search.
    """
    clone = object.__new__(type(document))
    clone.__dict__.update(vars(document))
    clone.__dict__["meta"] = dict(document.meta)
    clone.__dict__["score"] = float(score)
    return clone


def _top_ks(top_k: list[int | None] | None, n: int, default: int) -> list[int]:
    values = [default] * n if top_k is None else [default if k is None else int(k) for k in top_k]
    if any(k < 1 for k in values):
        raise ValueError(f"top_k must be at least 1, got {min(values)}")
    return values


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Per row of ``scores``, the column indices of the ``k`` highest scores, best first.

    Equal scores are ordered by column (corpus order). Which of several scores equal to the k-th one
    make the cut is left to numpy's ``argpartition``, which is deterministic for a given row, so a
    row gives the same result alone or inside a batch.
    """
    n_rows, n_cols = scores.shape
    k = min(k, n_cols)
    if k < n_cols:
        candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        candidates.sort(axis=1)
    else:
        candidates = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols))
    values = np.take_along_axis(scores, candidates, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)


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
        self._term_scores = None
        self._column_of_token = None
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
            import scipy.sparse as sp

            index = bm25.scores
            self._term_scores = sp.csr_matrix(
                (index["data"], index["indices"], index["indptr"]), shape=(len(index["indptr"]) - 1, index["num_docs"])
            )
            column_of_token = np.full(len(tokenizer.get_vocab_dict()) + 1, -1, dtype=np.int64)
            for token_id, column in bm25.vocab_dict.items():
                if token_id < len(column_of_token):
                    column_of_token[token_id] = column
            self._column_of_token = column_of_token
            self._documents, self._tokenizer, self._bm25 = documents, tokenizer, bm25

    def score_queries(self, queries: list[str]) -> np.ndarray:
        """BM25 scores of every corpus document for every query, shape (queries, documents).

        The batch is scored with one sparse product (query term counts x bm25s's precomputed
        term-document scores); the result is dense, so callers pass blocks of queries sized to the
        corpus. It sums the same terms as bm25s's ``get_scores`` (repeated query terms count again;
        non-occurrence scores of the bm25l/bm25+ variants are added).
        """
        self.warm_up()
        import scipy.sparse as sp

        token_ids = self._tokenizer.tokenize(list(queries), update_vocab=False, show_progress=False, return_as="ids")
        lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
        tokens = np.fromiter(itertools.chain.from_iterable(token_ids), dtype=np.int64, count=int(lengths.sum()))
        columns = self._column_of_token[tokens]
        rows = np.repeat(np.arange(len(token_ids)), lengths)
        known = columns >= 0
        counts = sp.csr_matrix(
            (np.ones(int(known.sum()), dtype=np.float32), (rows[known], columns[known])),
            shape=(len(token_ids), self._term_scores.shape[0]),
        )
        scores = (counts @ self._term_scores).toarray()
        if self._bm25.nonoccurrence_array is not None:
            scores += (counts @ self._bm25.nonoccurrence_array)[:, None]
        return scores

    @component.output_types(documents=list[Document])
    def run(self, query: str, top_k: int | None = None) -> dict[str, Any]:
        """Retrieve the ``top_k`` best documents for one query."""
        return self.run_single(query=query, top_k=top_k)

    def run_batch(self, query: list[str], top_k: list[int | None] | None = None) -> dict[str, list[Any]]:
        """Retrieve for a batch of queries: one sparse scoring pass and one top-k selection per row block."""
        self.warm_up()
        n = batch_size_of({"query": query} if top_k is None else {"query": query, "top_k": top_k})
        ks = _top_ks(top_k, n, self.top_k)
        block = max(1, (1 << 24) // len(self._documents))  # keeps a block's dense scores under ~64 MB
        documents: list[list[Document]] = []
        for start in range(0, n, block):
            scores = self.score_queries(list(query[start : start + block]))
            ranked = top_k_indices(scores, max(ks[start : start + block]))
            for row, columns, k in zip(scores, ranked, ks[start : start + block]):
                columns = columns[:k]
                documents.append(
                    [
                        _with_score(self._documents[c], v)
                        for c, v in zip(columns.tolist(), row[columns].tolist())
                        if v > 0
                    ]
                )
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
