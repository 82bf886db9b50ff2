"""Pseudo-relevance feedback (docs/methods/prf.md): the top documents of a first pass, taken as relevant,
reshape the query for a second pass.

- :class:`BM25RM3Retriever`: RM3 query expansion for BM25 (5.3).
- :class:`DensePRFRetriever`: vector PRF for dense retrieval, Average PRF or Rocchio (5.2).
- :class:`TextPRFReranker`: text PRF for a reranking scorer, concatenate-aggregate with Borda, sum or
  max (5.1).

Each runs a whole batch of questions at once. Besides ``documents`` each returns, on a ``feedback``
socket, one dict per question: ``feedback_docs`` (documents fed back), ``unchanged`` (true when there
was nothing to feed back, no document retrieved or no expansion term left, so the query was used as it
was) and, for RM3, ``expansion_terms``. ``feedback`` is not a documents socket, so a pipeline's final
``documents`` stay its only documents output; ``hopstack run`` shows it among the outputs and in traces.
"""

from typing import Any

import numpy as np
import scipy.sparse as sp
from haystack import Document, component

from hopstack.components.retrieval import BM25Retriever, DenseRetriever
from hopstack.core.batch import BatchComponent
from hopstack.core.ranking import candidate_top_ks, reorder, top_k_indices
from hopstack.core.text import first_words, indexed_text, passage_text
from hopstack.index.sparse import score_term_weights, term_counts, term_names
from hopstack.models.scorers import ScorerUser, score_all

AGGREGATIONS = ("borda", "sum", "max")


def _feedback(feedback_docs: int, unchanged: bool, **details: Any) -> dict[str, Any]:
    """One question's entry of the ``feedback`` output."""
    return {"feedback_docs": int(feedback_docs), **details, "unchanged": bool(unchanged)}


@component
class BM25RM3Retriever(BM25Retriever):
    """BM25 with RM3 pseudo-relevance feedback (the relevance model interpolated with the query).

    Per query: a BM25 first pass; its top ``fb_docs`` documents (score > 0) are the feedback set, each
    weighted by its first-pass score normalised over the set; the relevance model is
    P(t|R) = sum_d P(t|d) w(d) with P(t|d) = tf(t, d) / |d|, over the index's own terms (same tokenizer,
    stemming and stopwords; |d| the document's length as BM25 counts it); its ``fb_terms`` heaviest terms
    are kept and renormalised to sum 1; the new query is q' = |q| (lambda q / |q| + (1 - lambda) RM),
    lambda = ``original_query_weight``, q the query's term counts and |q| their sum; the second pass
    scores sum_t q'(t) bm25(t, d), a weighted BM25 query (Lucene's boosts), one sparse product per batch.
    Without feedback (nothing retrieved, or no expansion term left) q' = q: plain BM25, ``unchanged``.

    Where this differs from Anserini's ``Rm3Reranker`` (Pyserini's ``set_rm3``):

    - Anserini prunes each feedback document to its ``fb_terms`` most frequent terms and divides by that
      pruned total; here P(t|d) = tf / |d| over the whole document, the RM3 formula of docs/methods/prf.md#rm3.
    - Anserini skips feedback terms shorter than 2 or longer than 20 characters or outside [a-z0-9]; here
      the index's tokens are taken as they are (bm25s keeps runs of 2+ word characters). Its document
      frequency filter (no expansion term that occurs in more than 10% of the documents) is
      ``max_df_ratio``.
    - The factor |q|: Anserini's q' sums to 1. It does not change the ranking, keeps the original query's
      part on BM25's scale, and makes ``original_query_weight: 1`` score exactly as plain BM25. Likewise
      an empty relevance model leaves q' = q where Anserini's would be lambda q / |q| (same ranking).
    - Anserini weights feedback documents by raw scores, here by normalised ones: the same relevance
      model after its renormalisation.

    :param fb_docs: feedback documents per query (Anserini: 10).
    :param fb_terms: expansion terms kept (Anserini: 10).
    :param original_query_weight: lambda, the original query's share (Anserini: 0.5; 1 is plain BM25).
    :param max_df_ratio: terms in more than this fraction of the documents are never expansion terms
        (Anserini: 0.1); ``None`` keeps every term.

    The other parameters are :class:`~hopstack.components.retrieval.BM25Retriever`'s; the first and
    second passes use the same BM25.
    """

    extra_outputs = ("feedback",)

    def __init__(
        self,
        index: str | None = None,
        top_k: int = 10,
        fb_docs: int = 10,
        fb_terms: int = 10,
        original_query_weight: float = 0.5,
        max_df_ratio: float | None = 0.1,
        k1: float = 1.5,
        b: float = 0.75,
        method: str = "lucene",
        stemmer: str | None = "english",
        stopwords: str | None = "en",
        title_prefix: bool = True,
    ):
        BM25Retriever.__init__(  # not super(): @component rebuilds the class, which breaks zero-argument super()
            self,
            index=index,
            top_k=top_k,
            k1=k1,
            b=b,
            method=method,
            stemmer=stemmer,
            stopwords=stopwords,
            title_prefix=title_prefix,
        )
        if fb_docs < 0 or fb_terms < 0:
            raise ValueError(f"fb_docs and fb_terms must be non-negative, got {fb_docs} and {fb_terms}")
        if not 0 <= original_query_weight <= 1:
            raise ValueError(f"original_query_weight must be between 0 and 1, got {original_query_weight}")
        if max_df_ratio is not None and not 0 < max_df_ratio <= 1:
            raise ValueError(f"max_df_ratio must be in (0, 1] or None, got {max_df_ratio}")
        self.fb_docs = fb_docs
        self.fb_terms = fb_terms
        self.original_query_weight = original_query_weight
        self.max_df_ratio = max_df_ratio
        self._term_probabilities: sp.csr_matrix | None = None
        self._expandable: np.ndarray | None = None
        self._term_names: list[str] | None = None

    def warm_up(self) -> None:
        """Load BM25, then tokenise the documents again for their term counts (once)."""
        BM25Retriever.warm_up(self)
        with self._lock:
            if self._term_probabilities is not None:
                return
            texts = [indexed_text(d.meta.get("title", ""), d.content or "", self.title_prefix) for d in self._documents]
            counts = term_counts(self._model, texts)
            lengths = np.asarray(counts.sum(axis=1)).ravel()
            names = term_names(self._model)
            expandable = np.array([bool(name) for name in names])  # not bm25s's empty-document token
            if self.max_df_ratio is not None:
                document_frequency = np.bincount(counts.indices, minlength=counts.shape[1])
                expandable &= document_frequency <= self.max_df_ratio * len(texts)
            self._term_names, self._expandable = names, expandable
            self._term_probabilities = sp.csr_matrix(sp.diags(1.0 / np.maximum(lengths, 1.0)) @ counts)

    @component.output_types(documents=list[Document], feedback=dict[str, Any])
    def run(self, query: str, top_k: int | None = None) -> dict[str, Any]:
        """Retrieve the ``top_k`` best documents for one query after RM3 expansion."""
        return self.run_single(query=query, top_k=top_k)

    def _block_scores(self, queries: list[str]) -> tuple[np.ndarray, dict[str, list[Any]]]:
        """BM25 scores of the RM3-expanded queries: a first pass for feedback, then the weighted query."""
        weights, feedback = self.expand(queries)
        return score_term_weights(self._model, weights), {"feedback": feedback}

    def expand(self, queries: list[str]) -> tuple[sp.csr_matrix, list[dict[str, Any]]]:
        """The RM3 term weights of each query (queries x terms) and, per query, what was fed back."""
        self.warm_up()
        counts = term_counts(self._model, queries)
        relevance, feedback_docs = self._relevance_models(counts)
        query_lengths = np.asarray(counts.sum(axis=1)).ravel()
        expanding = np.diff(relevance.indptr) > 0  # a query without expansion terms stays as it was
        query_weights = np.where(expanding, self.original_query_weight, 1.0)
        feedback_weights = (1 - self.original_query_weight) * query_lengths
        expanded = sp.diags(query_weights) @ counts + sp.diags(feedback_weights) @ relevance
        feedback = []
        for row in range(len(queries)):
            start, stop = relevance.indptr[row], relevance.indptr[row + 1]
            terms = {
                self._term_names[c]: float(w) for c, w in zip(relevance.indices[start:stop], relevance.data[start:stop])
            }
            feedback.append(_feedback(feedback_docs[row], not terms, expansion_terms=terms))
        return sp.csr_matrix(expanded, dtype=np.float32), feedback

    def _relevance_models(self, counts: sp.csr_matrix) -> tuple[sp.csr_matrix, np.ndarray]:
        """Each query's relevance model, its ``fb_terms`` heaviest terms renormalised (heaviest first in
        each row), and the number of feedback documents of each query."""
        n, n_documents = counts.shape[0], len(self._documents)
        depth = min(self.fb_docs, n_documents)
        first_pass = score_term_weights(self._model, counts)
        columns = top_k_indices(first_pass, depth) if depth else np.zeros((n, 0), dtype=np.int64)
        scores = np.take_along_axis(first_pass, columns, axis=1)
        retrieved = scores > 0
        totals = np.where(retrieved, scores, 0.0).sum(axis=1, keepdims=True)
        document_weights = np.divide(scores, totals, out=np.zeros_like(scores, dtype=np.float64), where=totals > 0)
        rows = np.repeat(np.arange(n), depth).reshape(n, depth)
        feedback_weights = sp.csr_matrix(
            (document_weights[retrieved], (rows[retrieved], columns[retrieved])), shape=(n, n_documents)
        )
        relevance = sp.csr_matrix(feedback_weights @ self._term_probabilities)
        data, indices, indptr = [np.zeros(0)], [np.zeros(0, dtype=np.int64)], [0]
        for row in range(n):
            start, stop = relevance.indptr[row], relevance.indptr[row + 1]
            terms, weights = relevance.indices[start:stop], relevance.data[start:stop]
            keep = self._expandable[terms] & (weights > 0)
            terms, weights = terms[keep], weights[keep]
            order = np.lexsort((terms, -weights))[: self.fb_terms]  # heaviest first, ties by term column
            data.append(weights[order] / weights[order].sum() if len(order) else weights[order])
            indices.append(terms[order])
            indptr.append(indptr[-1] + len(order))
        model = sp.csr_matrix(
            (np.concatenate(data), np.concatenate(indices), np.array(indptr)), shape=(n, counts.shape[1])
        )
        return model, retrieved.sum(axis=1)


@component
class DensePRFRetriever(DenseRetriever):
    """Dense retrieval with vector pseudo-relevance feedback (Li et al., TOIS 2022; docs/methods/prf.md#vector-prf).

    The query's embedding q searches the index; the embeddings d_1..d_k of its top ``fb_docs`` documents
    (the index's stored embeddings; for a corpus embedded in memory, read back from the FAISS index) make
    a new query vector q', searched again: one extra FAISS search per batch.

    - Average PRF (``rocchio_weights: null``): q' = mean(q, d_1, ..., d_k); the paper uses k = 3.
    - Rocchio (``rocchio_weights: [alpha, beta]``): q' = alpha q + beta mean(d_1, ..., d_k); Pyserini's
      setting is k = 5, [0.4, 0.6]. The paper finds PRF works best when the query keeps the majority or
      an equal weight (e.g. [0.7, 0.3]) and with shallow feedback.

    With ``normalize`` (cosine embedders such as MiniLM, whose stored vectors are unit length) q' is
    renormalised to unit length: the ranking is that of the unnormalised q' (one positive factor per
    query) and the scores stay cosine similarities, on plain dense retrieval's scale. Without it
    (dot-product encoders such as ANCE) q' is searched as it is, as in the paper. A query with no
    feedback document keeps its own embedding.

    :param fb_docs: feedback documents per query (k; 0 is plain dense retrieval).
    :param rocchio_weights: ``[alpha, beta]`` for Rocchio, ``None`` for Average PRF.

    The other parameters are :class:`~hopstack.components.retrieval.DenseRetriever`'s.
    """

    extra_outputs = ("feedback",)

    def __init__(
        self,
        index: str | None = None,
        model: str = "minilm",
        top_k: int = 10,
        fb_docs: int = 3,
        rocchio_weights: list[float] | None = None,
        device: str = "auto",
        batch_size: int = 64,
        normalize: bool = True,
        title_prefix: bool = True,
        ef_search: int = 128,
        nprobe: int = 16,
        cache: bool = True,
    ):
        DenseRetriever.__init__(  # not super(), see BM25RM3Retriever
            self,
            index=index,
            model=model,
            top_k=top_k,
            device=device,
            batch_size=batch_size,
            normalize=normalize,
            title_prefix=title_prefix,
            ef_search=ef_search,
            nprobe=nprobe,
            cache=cache,
        )
        if fb_docs < 0:
            raise ValueError(f"fb_docs must be non-negative, got {fb_docs}")
        if rocchio_weights is not None and (
            len(rocchio_weights) != 2 or min(rocchio_weights) < 0 or sum(rocchio_weights) <= 0
        ):
            raise ValueError(f"rocchio_weights must be [alpha, beta], non-negative, not both 0; got {rocchio_weights}")
        self.fb_docs = fb_docs
        self.rocchio_weights = rocchio_weights
        self._document_vectors: np.ndarray | None = None

    def warm_up(self) -> None:
        """Load the embedder, the FAISS index and the document embeddings (once)."""
        DenseRetriever.warm_up(self)
        with self._lock:
            if self._document_vectors is None:
                self._document_vectors = (
                    self._folder.embeddings()
                    if self._folder is not None
                    else self._faiss_index.reconstruct_n(0, self._faiss_index.ntotal)
                )

    @component.output_types(documents=list[Document], feedback=dict[str, Any])
    def run(self, query: str, top_k: int | None = None) -> dict[str, Any]:
        """Retrieve the ``top_k`` nearest documents for one query after vector PRF."""
        return self.run_single(query=query, top_k=top_k)

    def _query_vectors(self, vectors: np.ndarray) -> tuple[np.ndarray, dict[str, list[Any]]]:
        """The PRF vectors of the query embeddings (one extra FAISS search for the feedback)."""
        expanded, feedback = self.feedback_vectors(vectors)
        return expanded, {"feedback": feedback}

    def feedback_vectors(self, vectors: np.ndarray) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The PRF query vector of each query embedding (one FAISS search) and what was fed back."""
        depth = min(self.fb_docs, len(self._documents))
        ids = self.faiss_search(vectors, depth)[1] if depth else np.zeros((len(vectors), 0), dtype=np.int64)
        expanded = np.array(vectors, dtype=np.float32, copy=True)
        feedback = []
        for row, row_ids in enumerate(ids):
            found = row_ids[row_ids >= 0]
            if len(found):
                documents = np.asarray(self._document_vectors[found], dtype=np.float32)
                if self.rocchio_weights is None:
                    vector = (vectors[row] + documents.sum(axis=0)) / (len(found) + 1)
                else:
                    alpha, beta = self.rocchio_weights
                    vector = alpha * vectors[row] + beta * documents.mean(axis=0)
                norm = float(np.linalg.norm(vector))
                expanded[row] = vector / norm if self.normalize and norm > 0 else vector
            feedback.append(_feedback(len(found), not len(found)))
        return expanded, feedback


def aggregate_votes(scores: np.ndarray, aggregation: str) -> np.ndarray:
    """Combine a (voters x documents) score matrix into one score per document.

    ``borda``: each voter ranks the documents (ties in document order) and gives the document at rank r
    of n the points (n - r + 1) / n, summed over voters; ``sum``; ``max``.
    """
    if aggregation == "sum":
        return scores.sum(axis=0)
    if aggregation == "max":
        return scores.max(axis=0)
    voters, n = scores.shape
    ranks = np.empty((voters, n), dtype=np.float64)
    np.put_along_axis(ranks, np.argsort(-scores, axis=1, kind="stable"), np.arange(1, n + 1, dtype=np.float64), 1)
    return ((n - ranks + 1) / n).sum(axis=0)


@component
class TextPRFReranker(ScorerUser, BatchComponent):
    """Text-based PRF for a reranking scorer, concatenate-aggregate (CA) (Li et al., TOIS 2022;
    docs/methods/prf.md#text-prf).

    For a query q and its first-stage list L (``documents``), each of the top ``fb_docs`` passages p_i of L
    makes a query q_i = the first ``max_query_words`` words of q + " " + p_i; every document d of L is
    scored by scorer(q_i, d), and the k votes are aggregated (``borda``, ``sum`` or ``max``; see
    :func:`aggregate_votes`). The original query alone is not a voter, except when there is nothing to
    feed back (``fb_docs: 0``): then L is scored by scorer(q, d), a plain pointwise rerank, the baseline
    that PRF is measured against. Documents come back re-scored with their aggregate, best first (ties in
    first-stage order), at most ``top_k``. Every (q_i, d) pair of a batch goes to the scorer in one call.

    Words are whitespace-separated (the paper uses NLTK's word tokenizer); passages are ``"title. text"``
    with ``title_prefix``.

    :param scorer: a scorer, a nested spec (:func:`hopstack.models.scorers.make_scorer`), e.g.
        ``{type: cross-encoder, init_parameters: {model: cross-encoder/ms-marco-MiniLM-L-6-v2}}``,
        ``{type: bi-encoder, init_parameters: {model: minilm}}`` or
        ``{type: llm, init_parameters: {llm: qwen2.5-0.5b}}``.
    :param fb_docs: feedback passages (voters) per query; the paper's best is 3 or fewer.
    :param aggregation: ``borda`` (the paper's best), ``sum`` or ``max``.
    :param top_k: documents returned unless the ``top_k`` input overrides it.
    :param max_query_words: words kept of each q + passage (the paper: 256).
    :param title_prefix: passages are ``"title. text"`` when a document has a title.
    :param device: ``auto | cpu | cuda | cuda:N`` for an encoder scorer (an LLM's is in its spec).
    """

    reranks = True  # the Reranker role (hopstack.core.roles)

    def __init__(
        self,
        scorer: dict[str, Any],
        fb_docs: int = 3,
        aggregation: str = "borda",
        top_k: int = 10,
        max_query_words: int = 256,
        title_prefix: bool = True,
        device: str = "auto",
    ):
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}; got {aggregation!r}")
        if fb_docs < 0:
            raise ValueError(f"fb_docs must be non-negative, got {fb_docs}")
        if top_k < 1 or max_query_words < 1:
            raise ValueError(f"top_k and max_query_words must be at least 1, got {top_k} and {max_query_words}")
        self.use_scorer(scorer, device)
        self.fb_docs = fb_docs
        self.aggregation = aggregation
        self.top_k = top_k
        self.max_query_words = max_query_words
        self.title_prefix = title_prefix

    @component.output_types(documents=list[Document], feedback=dict[str, Any])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, Any]:
        """Rerank one query's first-stage documents with text PRF."""
        return self.run_single(query=query, documents=documents, top_k=top_k)

    def run_batch(
        self, query: list[str], documents: list[list[Document]], top_k: list[int | None] | None = None
    ) -> dict[str, list[Any]]:
        """Rerank a batch: every (feedback query, document) pair of the batch is scored in one call."""
        ks = candidate_top_ks(query, documents, top_k, self.top_k)
        voters_of, pairs = [], []
        for q, candidates in zip(query, documents):
            passages = [passage_text(d, self.title_prefix) for d in candidates]
            voters = [first_words(f"{q} {p}", self.max_query_words) for p in passages[: self.fb_docs]]
            voters = voters or [first_words(q, self.max_query_words)]
            voters_of.append(voters)
            pairs.extend((voter, passage) for voter in voters for passage in passages)
        scores = score_all(self._scorer, pairs, type(self).__name__)
        reranked, feedback, offset = [], [], 0
        for voters, candidates, k in zip(voters_of, documents, ks):
            size = len(voters) * len(candidates)
            votes = scores[offset : offset + size].reshape(len(voters), len(candidates))
            offset += size
            fed_back = min(self.fb_docs, len(candidates))
            feedback.append(_feedback(fed_back, fed_back == 0))
            if not candidates:
                reranked.append([])
                continue
            reranked.append(reorder(candidates, aggregate_votes(votes, self.aggregation), k))
        return {"documents": reranked, "feedback": feedback}
