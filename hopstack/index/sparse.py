"""The BM25 part of an index: a bm25s model with its tokenizer, built, saved and loaded."""

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import scipy.sparse as sp

BM25_METHODS = ("robertson", "lucene", "atire", "bm25l", "bm25+")


@dataclass(frozen=True)
class BM25Settings:
    """Everything that changes BM25 scores; an index is reused only when these match."""

    k1: float = 1.5
    b: float = 0.75
    method: str = "lucene"
    stemmer: str | None = "english"
    stopwords: str | None = "en"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.k1) and self.k1 >= 0) or not (math.isfinite(self.b) and 0 <= self.b <= 1):
            raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1 (finite), got k1={self.k1!r}, b={self.b!r}")
        if self.method not in BM25_METHODS:
            raise ValueError(f"BM25 method must be one of {', '.join(BM25_METHODS)}, got {self.method!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SparseModel:
    """A bm25s model, its tokenizer and, for batch scoring, its term-document score matrix and the
    non-occurrence score of each term (bm25l and bm25+; ``None`` otherwise).

    The model is indexed with the tokenizer's vocabulary, so a token id is a row of ``term_scores``.
    """

    tokenizer: Any
    bm25: Any
    term_scores: Any
    nonoccurrence: np.ndarray | None


def _tokenizer(settings: BM25Settings):
    import bm25s

    stemmer = None
    if settings.stemmer:
        import Stemmer

        stemmer = Stemmer.Stemmer(settings.stemmer)
    return bm25s.tokenization.Tokenizer(stopwords=settings.stopwords or [], stemmer=stemmer)


def _model(tokenizer, bm25) -> SparseModel:
    """The model with bm25s's precomputed BM25 score of every (term, document) as a terms x documents
    matrix, and its non-occurrence scores.

    bm25s has no public accessor for these (``BM25.get_scores`` scores one unweighted query at a time),
    and batch scoring and RM3's weighted queries need them: they are read, never changed, from the
    attributes that ``BM25.save`` writes (``scores``, ``nonoccurrence_array``).
    """
    import scipy.sparse as sp

    index = bm25.scores
    term_scores = sp.csr_matrix(
        (index["data"], index["indices"], index["indptr"]), shape=(len(index["indptr"]) - 1, index["num_docs"])
    )
    terms = len(tokenizer.get_vocab_dict())
    if term_scores.shape[0] != terms:
        raise ValueError(f"the bm25s model has {term_scores.shape[0]} terms, its tokenizer {terms}")
    return SparseModel(tokenizer, bm25, term_scores, bm25.nonoccurrence_array)


def build_sparse(texts: list[str], settings: BM25Settings) -> SparseModel:
    """Tokenize ``texts`` and index them with bm25s, over the tokenizer's vocabulary."""
    import bm25s

    if settings.method not in BM25_METHODS:
        raise ValueError(f"method must be one of {', '.join(BM25_METHODS)}; got {settings.method!r}")
    tokenizer = _tokenizer(settings)
    tokenized = tokenizer.tokenize(texts, show_progress=False, return_as="tuple")
    bm25 = bm25s.BM25(k1=settings.k1, b=settings.b, method=settings.method)
    bm25.index(tokenized, show_progress=False)
    return _model(tokenizer, bm25)


def save_sparse(model: SparseModel, folder: Path) -> None:
    """Write the bm25s model and its tokenizer vocabulary into ``folder``."""
    model.bm25.save(str(folder), show_progress=False)
    model.tokenizer.save_vocab(str(folder))
    model.tokenizer.save_stopwords(str(folder))


def load_sparse(folder: Path, settings: BM25Settings) -> SparseModel:
    """Load what :func:`save_sparse` wrote."""
    import bm25s

    tokenizer = _tokenizer(settings)
    tokenizer.load_vocab(str(folder))
    tokenizer.load_stopwords(str(folder))
    bm25 = bm25s.BM25.load(str(folder), show_progress=False)
    return _model(tokenizer, bm25)


def term_counts(model: SparseModel, texts: list[str]) -> "sp.csr_matrix":
    """Term counts of ``texts`` over the index's terms, shape (texts, terms), tokenised as the index was
    (same stemming and stopwords).

    Terms the index does not know are left out (the tokenizer does not add them); a repeated term counts
    again. For queries these are the weights of plain BM25 (:func:`score_term_weights`); for the indexed
    texts themselves (bm25s keeps only term-document scores, so they are tokenised again) the row sums are
    the document lengths BM25 used.
    """
    import itertools

    import scipy.sparse as sp

    token_ids = model.tokenizer.tokenize(list(texts), update_vocab=False, show_progress=False, return_as="ids")
    lengths = np.fromiter((len(ids) for ids in token_ids), dtype=np.int64, count=len(token_ids))
    tokens = np.fromiter(itertools.chain.from_iterable(token_ids), dtype=np.int64, count=int(lengths.sum()))
    rows = np.repeat(np.arange(len(token_ids)), lengths)
    return sp.csr_matrix(
        (np.ones(len(tokens), dtype=np.float32), (rows, tokens)), shape=(len(token_ids), model.term_scores.shape[0])
    )


def term_names(model: SparseModel) -> list[str]:
    """The term (a stem when the index stems) of each column of the index's term matrices."""
    names = [""] * model.term_scores.shape[0]
    for name, token_id in model.tokenizer.get_vocab_dict().items():
        names[int(token_id)] = name
    return names


def score_term_weights(model: SparseModel, weights: "sp.csr_matrix") -> np.ndarray:
    """BM25 scores of every document for weighted queries, shape (queries, documents).

    ``weights`` (queries x terms) multiplies each query term's BM25 contribution, as a Lucene boost
    does; the queries' term counts (:func:`term_counts`) give plain BM25. One sparse product for the
    batch; the result is dense, so callers pass blocks of queries sized to the corpus.
    """
    scores = (weights @ model.term_scores).toarray()
    if model.nonoccurrence is not None:
        scores += (weights @ model.nonoccurrence)[:, None]
    return scores


def score_queries(model: SparseModel, queries: list[str]) -> np.ndarray:
    """BM25 scores of every document for every query, shape (queries, documents).

    The batch is scored with one sparse product (query term counts x bm25s's precomputed term-document
    scores); the result is dense, so callers pass blocks of queries sized to the corpus. It sums the
    same terms as bm25s's ``get_scores`` (repeated query terms count again; non-occurrence scores of
    the bm25l/bm25+ variants are added).
    """
    return score_term_weights(model, term_counts(model, queries))
