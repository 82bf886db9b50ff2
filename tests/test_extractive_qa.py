"""The extractive-QA answerability scorer: the span/no-answer softmax on known logits, and a tiny random
BERT question-answering model the test builds (MiniLM's tokenizer)."""

import numpy as np
import pytest
import torch

from conftest import save_tiny_bert
from hopstack.models.extractive_qa import ExtractiveQAScorer
from hopstack.models.scorers import make_scorer


def test_answer_probability_is_one_minus_the_no_answer_share():
    scorer = ExtractiveQAScorer("unused", max_answer_tokens=2)
    context = torch.tensor([False, False, True, True, True])  # [CLS], a question token, 3 passage tokens
    flat = scorer._answer_probability(torch.zeros(5), torch.zeros(5), context)
    # spans of at most 2 passage tokens: (2,2) (3,3) (4,4) (2,3) (3,4) = 5 spans, plus the null span
    assert flat == pytest.approx(5 / 6)
    sure = torch.tensor([0.0, 0.0, 9.0, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 9.0, 0.0])
    assert scorer._answer_probability(*sure, context) > 0.99
    unsure = torch.tensor([9.0, 0.0, 0.0, 0.0, 0.0]), torch.tensor([9.0, 0.0, 0.0, 0.0, 0.0])
    assert scorer._answer_probability(*unsure, context) < 1e-6


@pytest.fixture(scope="module")
def tiny_qa_model(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-qa"), "BertForQuestionAnswering")


def test_scores_are_probabilities_batched_like_single(tiny_qa_model):
    scorer = make_scorer(
        {"type": "extractive-qa", "init_parameters": {"model": tiny_qa_model, "batch_size": 2, "max_length": 64}}, "cpu"
    )
    pairs = [
        ("who founded the mill", "Edda Varrow founded Brannock Looms in 1874."),
        ("which river", "The Saltwhistle River runs through Hollin Ford."),
        ("a question", " ".join(["long passage"] * 300)),
    ]
    scores = scorer.score(pairs)
    assert scores.shape == (3,) and ((scores >= 0) & (scores <= 1)).all()
    np.testing.assert_allclose(scores, [scorer.score([p])[0] for p in pairs], atol=1e-5)
