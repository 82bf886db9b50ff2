"""Sentence-aligned, token-based chunking with overlap.

Sentences come from blingfire (with character offsets, so every chunk is an exact slice of its
source text); tokens are counted with a Hugging Face tokenizer (by default the MiniLM WordPiece
tokenizer of the embedded embedder) or as whitespace words. A chunk takes whole sentences while they
fit in ``max_tokens``; the next chunk starts with the previous chunk's last sentences that fit in
``overlap_tokens``. A sentence longer than ``max_tokens`` is cut at token boundaries.

The defaults (256 tokens, 25 overlapping) follow the MultiHop-RAG protocol (about 256 tokens, about
10% overlap). That protocol counted tiktoken tokens, which cannot be loaded offline; WordPiece counts
run somewhat higher on English news, so chunks here are slightly shorter in words (about 180-200).
"""

import threading
from dataclasses import dataclass
from typing import Any

from hopstack.index.formats import SourceDocument

_TOKENIZERS: dict[str, Any] = {}
_LOCK = threading.Lock()


@dataclass
class Chunk:
    """A piece of a source document."""

    id: str
    doc_id: str
    title: str
    text: str
    position: int
    start: int
    end: int
    meta: dict[str, Any]


def load_tokenizer(name: str):
    """The fast tokenizer of a registry model or path, loaded once per process."""
    from hopstack.models.registry import resolve_model

    with _LOCK:
        if name not in _TOKENIZERS:
            from transformers import AutoTokenizer

            _TOKENIZERS[name] = AutoTokenizer.from_pretrained(resolve_model(name), use_fast=True)
        return _TOKENIZERS[name]


class SentenceChunker:
    """Split documents into overlapping chunks of whole sentences.

    :param max_tokens: the most tokens in a chunk.
    :param overlap_tokens: the most tokens of trailing sentences repeated at the start of the next chunk.
    :param tokenizer: ``words`` (whitespace words), a registry name (``minilm``), a Hugging Face id or a path.
    """

    def __init__(self, max_tokens: int = 256, overlap_tokens: int = 25, tokenizer: str = "minilm"):
        if max_tokens < 8:
            raise ValueError(f"max_tokens must be at least 8, got {max_tokens}")
        if not 0 <= overlap_tokens < max_tokens:
            raise ValueError(f"overlap_tokens must be in [0, max_tokens), got {overlap_tokens}")
        self.max_tokens = max_tokens
        self.overlap_tokens = overlap_tokens
        self.tokenizer = tokenizer

    def settings(self) -> dict[str, Any]:
        """The settings recorded in an index manifest."""
        return {"max_tokens": self.max_tokens, "overlap_tokens": self.overlap_tokens, "tokenizer": self.tokenizer}

    def _token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens of ``text``."""
        if self.tokenizer == "words":
            import re

            return [m.span() for m in re.finditer(r"\S+", text)]
        encoding = load_tokenizer(self.tokenizer)(
            text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
        )
        return [tuple(span) for span in encoding["offset_mapping"]]

    def _units(self, text: str) -> list[tuple[int, int, int]]:
        """(start, end, tokens) of each sentence; sentences over ``max_tokens`` are cut at token bounds."""
        import blingfire

        tokens = self._token_spans(text)
        _, sentences = blingfire.text_to_sentences_and_offsets(text) if text.strip() else ("", [])
        units: list[tuple[int, int, int]] = []
        t = 0
        for start, end in sentences:
            inside = []
            while t < len(tokens) and tokens[t][0] < end:
                if tokens[t][1] > start:
                    inside.append(tokens[t])
                t += 1
            if len(inside) <= self.max_tokens:
                units.append((start, end, len(inside)))
                continue
            for i in range(0, len(inside), self.max_tokens):  # pieces that tile the over-long sentence
                piece_start = start if i == 0 else inside[i][0]
                piece_end = end if i + self.max_tokens >= len(inside) else inside[i + self.max_tokens][0]
                units.append((piece_start, piece_end, len(inside[i : i + self.max_tokens])))
        return units

    def split(self, document: SourceDocument) -> list[Chunk]:
        """The chunks of one document, in order; a document without text gives no chunk."""
        units = self._units(document.text)
        chunks: list[Chunk] = []
        i = 0
        while i < len(units):
            j, size = i, 0
            while j < len(units) and (j == i or size + units[j][2] <= self.max_tokens):
                size += units[j][2]
                j += 1
            start, end = units[i][0], units[j - 1][1]
            position = len(chunks)
            chunks.append(
                Chunk(
                    id=f"{document.id}#{position}",
                    doc_id=document.id,
                    title=document.title,
                    text=document.text[start:end],
                    position=position,
                    start=start,
                    end=end,
                    meta=document.meta,
                )
            )
            if j >= len(units):
                break
            # step back over trailing sentences that fit in the overlap, never to the chunk's own start
            k, overlap = j, 0
            while k - 1 > i and overlap + units[k - 1][2] <= self.overlap_tokens:
                overlap += units[k - 1][2]
                k -= 1
            i = k
        return chunks
