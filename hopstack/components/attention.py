"""In-context reranking by attention (ICR; Chen, Jiménez Gutiérrez and Su, ICLR 2025; docs/methods/rerankers.md#icr).

The LLM reads every candidate once, in one prompt, followed by the query; a candidate's score is how
much attention the query's tokens pay to its tokens, calibrated by the attention that a content-free
query ("N/A") pays them. No generation, so the ranking is always well-formed.

This runs on the transformers backend (attention weights are needed; llama.cpp does not expose them):
the documents are encoded once and their KV cache reused for the real and the calibration query, whose
forward passes use eager attention to return the weights of the query rows only. Questions are ranked
one after another (two short forward passes each, after one over the documents).
"""

import contextlib
import copy
import inspect
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from haystack import Document, component

from hopstack.components.rerankers import Reranker
from hopstack.core.ranking import candidate_top_ks, reorder
from hopstack.core.text import prompt_passages
from hopstack.models.llm import USAGE, TransformersLLM, make_llm

ICR_INTRO = "Here are some paragraphs:"
ICR_INSTRUCTIONS = {
    "ie": "Please find information that are relevant to the following query in the paragraphs above.",
    "qa": "Please answer the following question based on the information in the paragraphs above.",
}
CALIBRATION_QUERY = "N/A"
SENTINEL = "\x00ICR\x00"
Span = tuple[int, int]  # [start, end) token positions


def calibrated_scores(query_attention: np.ndarray, na_attention: np.ndarray, spans: list[Span]) -> np.ndarray:
    """ICR's document scores from per-token attention (summed over layers and heads, averaged over the query's
    tokens) under the real and the content-free query: per document, delta = real - content-free on its
    tokens, tokens with delta <= mean(delta) - 2 std(delta) masked out (none when all deltas are equal), the rest
    summed."""
    scores = np.zeros(len(spans))
    for d, (start, end) in enumerate(spans):
        delta = query_attention[start:end] - na_attention[start:end]
        if len(delta):
            spread = delta.std()
            keep = delta > delta.mean() - 2 * spread if spread > 0 else np.ones(len(delta), dtype=bool)
            scores[d] = float(delta[keep].sum())
    return scores


@contextlib.contextmanager
def _eager_attention(model) -> Iterator[None]:
    """Eager attention (the implementation that returns attention weights) on ``model`` while the block runs,
    then the model's own again. transformers has no public getter for a model's attention implementation,
    so its config's private ``_attn_implementation`` is read here alone."""
    implementation = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(implementation)


@component
class AttentionReranker(Reranker):
    """ICR in-context reranking (see the module docstring); with a small model it is an ICR-style
    small-model approximation (ICR used Llama-3.1-8B and Mistral-7B).

    :param llm: a model for the transformers backend: a Hugging Face id or folder, a GGUF file or registry
        LLM (de-quantised by transformers: slow on a CPU), or ``{type: transformers, init_parameters}``.
    :param task: ``ie`` (find information relevant to the query; ICR's retrieval instruction) or ``qa``.
    :param reverse_doc_order: list the candidates in reverse order, the first-stage best last (ICR on BEIR).
    :param max_passage_words: words kept of each passage (ICR: 300).
    :param top_k: documents returned unless the ``top_k`` input overrides it.
    :param title_prefix: passages are ``"title. text"`` when a document has a title.
    :param device: ``auto | cpu | cuda | cuda:N`` when ``llm`` is not a mapping.
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        task: str = "ie",
        reverse_doc_order: bool = True,
        max_passage_words: int = 300,
        top_k: int = 10,
        title_prefix: bool = True,
        device: str = "auto",
    ):
        if task not in ICR_INSTRUCTIONS:
            raise ValueError(f"task must be one of {', '.join(ICR_INSTRUCTIONS)}, got {task!r}")
        if top_k < 1 or max_passage_words < 1:
            raise ValueError(f"top_k and max_passage_words must be at least 1, got {top_k} and {max_passage_words}")
        self.llm = llm
        self.task = task
        self.reverse_doc_order = reverse_doc_order
        self.max_passage_words = max_passage_words
        self.top_k = top_k
        self.title_prefix = title_prefix
        self.device = device
        spec = llm if isinstance(llm, dict) else {"type": "transformers", "init_parameters": {"model": llm}}
        if isinstance(llm, str):
            spec["init_parameters"]["device"] = device
        self._backend = make_llm(spec)
        if not isinstance(self._backend, TransformersLLM):
            raise ValueError("AttentionReranker needs the transformers backend (attention weights)")

    def warm_up(self) -> None:
        """Load the model (shared per process)."""
        self._backend.warm_up()

    def run_batch(
        self, query: list[str], documents: list[list[Document]], top_k: list[int | None] | None = None
    ) -> dict[str, list[Any]]:
        """Rerank a batch, one question after another."""
        self.warm_up()
        ks = candidate_top_ks(query, documents, top_k, self.top_k)
        reranked = []
        for q, candidates, k in zip(query, documents, ks):
            scores = self.scores(q, prompt_passages(candidates, self.title_prefix, self.max_passage_words))
            reranked.append(reorder(candidates, scores, k))
        return {"documents": reranked}

    def prompt_parts(self, query: str, passages: list[str]) -> tuple[list[int], list[Span], list[int], list[int]]:
        """The prompt as token ids: the context (chat prefix, paragraphs, instruction, "Query:"), each
        passage's token span in it, the query's ids and the closing ids (chat suffix). Pieces are tokenised
        one by one, so the spans are exact."""
        head, tail = "", ""
        if self._backend.tokenizer.chat_template:
            head, tail = self._backend.render([{"role": "user", "content": SENTINEL}]).split(SENTINEL)
        ids = self._token_ids
        bos = self._backend.tokenizer.bos_token_id
        context = ([bos] if bos is not None and not head else []) + ids(head + ICR_INTRO)
        order = range(len(passages) - 1, -1, -1) if self.reverse_doc_order else range(len(passages))
        spans: list[Span] = [(0, 0)] * len(passages)
        for number, d in enumerate(order, 1):
            context += ids(f"\n\n[{number}]")
            piece = ids(" " + passages[d])
            spans[d] = (len(context), len(context) + len(piece))
            context += piece
        context += ids(f"\n\n{ICR_INSTRUCTIONS[self.task]}\n\nQuery:")
        return context, spans, ids(" " + query), ids(tail)

    def _token_ids(self, text: str) -> list[int]:
        return self._backend.tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

    def scores(self, query: str, passages: list[str]) -> np.ndarray:
        """ICR scores of ``passages`` for ``query`` (higher is more relevant)."""
        if not passages:
            return np.zeros(0)
        context, spans, query_ids, closing = self.prompt_parts(query, passages)
        calibration_ids = self._token_ids(" " + CALIBRATION_QUERY)
        attention = self._query_attention(context, [query_ids, calibration_ids], closing)
        return calibrated_scores(attention[0], attention[1], spans)

    def _query_attention(self, context: list[int], queries: list[list[int]], closing: list[int]) -> list[np.ndarray]:
        """For each query: attention from its tokens to each context token, summed over layers and heads and
        averaged over the query's tokens (the context's KV cache computed once)."""
        import torch

        started = time.perf_counter()
        with self._backend.locked() as model, torch.inference_mode():
            cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
            device = model.device
            encoded = model(input_ids=torch.tensor([context], device=device), use_cache=True)
            cached = encoded.cache if cache_arg == "cache" else encoded.past_key_values  # transformers 5 renamed it
            results = []
            with _eager_attention(model):
                for query_ids in queries:
                    out = model(
                        input_ids=torch.tensor([query_ids + closing], device=device),
                        use_cache=True,
                        output_attentions=True,
                        **{cache_arg: copy.deepcopy(cached)},
                    )
                    rows = sum(layer[0, :, : len(query_ids), : len(context)].float().sum(0) for layer in out.attentions)
                    results.append(rows.mean(0).cpu().numpy())
        tokens = len(context) + sum(len(q) + len(closing) for q in queries)
        USAGE.add(1 + len(queries), tokens, seconds=time.perf_counter() - started)
        return results
