"""Text as hopstack's stages read it: a document's passage, a prompt's numbered passage list, sentences, and
SQuAD/HotpotQA answer normalisation (the reader cleans answers with the rule the metrics score them by)."""

import difflib
import re
import reprlib
import string
from collections.abc import Sequence

from haystack import Document

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)
# "1413.Hermann II": sentences some corpora (2WikiMultihopQA's paragraphs) join without a space
_GLUED_SENTENCES = re.compile(r"(?<=[a-z0-9][a-z0-9][.!?])(?=[A-Z][a-z])")


_SHORT = reprlib.Repr()  # (Python 3.11's Repr takes no keyword arguments)
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 3, 6, 6, 120, 120


def short_repr(value: object, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for echoing user input in messages (a huge value, or a
    YAML alias bomb, must not make a message huge)."""
    text = _SHORT.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def nearest(name: str, candidates: Sequence[str], n: int = 3) -> list[str]:
    """Up to ``n`` candidates close to ``name`` (difflib ratio at least 0.5), for "did you mean" hints."""
    return difflib.get_close_matches(name, list(candidates), n=n, cutoff=0.5)


def did_you_mean(name: str, candidates: Sequence[str]) -> str:
    """``"; did you mean 'a', 'b'?"`` with the candidates close to ``name``, or "" when none is."""
    close = nearest(name, candidates)
    return f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""


def indexed_text(title: str, text: str, title_prefix: bool) -> str:
    """The text BM25 and the embedder see: the chunk, prefixed by its title when asked."""
    return f"{title}. {text}" if title_prefix and title else text


def passage_text(document: Document, title_prefix: bool = True) -> str:
    """The text a reranker reads for a document: ``"title. text"`` with ``title_prefix`` and a title."""
    return indexed_text(document.meta.get("title", ""), document.content or "", title_prefix)


def prompt_passages(candidates: Sequence[Document], title_prefix: bool, max_words: int) -> list[str]:
    """The candidates' passages as an LLM prompt lists them: :func:`passage_text`, first ``max_words`` words."""
    return [first_words(passage_text(d, title_prefix), max_words) for d in candidates]


def numbered_passages(passages: Sequence[str], empty: str) -> str:
    """Passages as a prompt lists them, one per line as ``[i] passage`` from 1; ``empty`` when there are none."""
    return "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, 1)) or empty


def first_words(text: str, n: int) -> str:
    """The first ``n`` whitespace-separated words of ``text``, joined by single spaces."""
    return " ".join(text.split()[:n])


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` (blingfire, as the chunker uses; glued "end.Next" boundaries split first)."""
    import blingfire

    text = _GLUED_SENTENCES.sub(" ", text).strip()
    if not text:
        return []
    return [s.strip() for s in blingfire.text_to_sentences(text).split("\n") if s.strip()]


def normalize_answer(text: str) -> str:
    """SQuAD/HotpotQA answer normalisation: lowercase, drop punctuation and the articles a/an/the, and
    collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())
