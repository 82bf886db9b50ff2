"""Answerability from any SQuAD 2.0-style extractive QA model
(docs/methods/compselect.md#what-hopstack-implements: ``1 - P_noanswer``).

A SQuAD 2.0 model scores every answer span (start logit + end logit) and a "no answer" span at the
[CLS] token. :class:`ExtractiveQAScorer` turns those into a probability that the passage answers the
question: the softmax over the null span and every span of the passage up to ``max_answer_tokens`` long,
minus the null span's share. No such model ships offline here (``deepset/roberta-base-squad2`` is
docs/methods/compselect.md's example); the tests build a tiny random one. Models load once per process per device.
"""

import threading
from collections.abc import Sequence

import numpy as np

from hopstack.models.devices import resolve_device
from hopstack.models.registry import resolve_model

_LOCK = threading.Lock()
_MODELS: dict[tuple[str, str], tuple[object, object]] = {}


class ExtractiveQAScorer:
    """P(the passage answers the question) = 1 - P(no answer) of an extractive QA model, per pair.

    :param model: a Hugging Face id or a local folder of a question-answering model and its tokenizer.
    :param device: ``auto | cpu | cuda | cuda:N``.
    :param batch_size: pairs per forward pass.
    :param max_length: tokens per pair; longer passages are truncated.
    :param max_answer_tokens: the longest answer span counted.
    """

    def __init__(
        self,
        model: str,
        device: str = "auto",
        batch_size: int = 32,
        max_length: int = 384,
        max_answer_tokens: int = 30,
    ):
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.max_answer_tokens = max_answer_tokens
        self._tokenizer = None
        self._model = None

    def warm_up(self) -> None:
        """Load the tokenizer and model (shared per process and device)."""
        if self._model is None:
            key = (resolve_model(self.model), resolve_device(self.device))
            with _LOCK:
                if key not in _MODELS:
                    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

                    model = AutoModelForQuestionAnswering.from_pretrained(key[0]).to(key[1]).eval()
                    _MODELS[key] = (AutoTokenizer.from_pretrained(key[0]), model)
                self._tokenizer, self._model = _MODELS[key]

    def score(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """1 - P(no answer) for each (question, passage) pair."""
        import torch

        self.warm_up()
        scores = []
        for start in range(0, len(pairs), self.batch_size):
            batch = pairs[start : start + self.batch_size]
            encoded = self._tokenizer(
                [q for q, _ in batch], [p for _, p in batch], truncation="only_second", max_length=self.max_length,
                padding=True, return_tensors="pt",
            )  # fmt: skip
            context = torch.tensor([[s == 1 for s in encoded.sequence_ids(i)] for i in range(len(batch))])
            with torch.inference_mode():
                output = self._model(**{k: v.to(self._model.device) for k, v in encoded.items()})
            starts, ends = output.start_logits.float().cpu(), output.end_logits.float().cpu()
            scores.extend(self._answer_probability(starts[i], ends[i], context[i]) for i in range(len(batch)))
        return np.asarray(scores, dtype=np.float32)

    def _answer_probability(self, start, end, context) -> float:
        import torch

        spans = start[:, None] + end[None, :]  # spans[i, j]: the answer runs from token i to token j
        n = len(start)
        offsets = torch.arange(n)[None, :] - torch.arange(n)[:, None]
        allowed = (offsets >= 0) & (offsets < self.max_answer_tokens) & context[:, None] & context[None, :]
        null = start[0] + end[0]  # the [CLS] span: no answer
        everything = torch.logsumexp(torch.cat([spans[allowed], null.reshape(1)]), dim=0)
        return float(1.0 - torch.exp(null - everything))
