"""The cross-encoder scorer on a tiny randomly initialised BERT built by the test (MiniLM's tokenizer)."""

import numpy as np
import pytest

from conftest import save_tiny_bert
from hopstack.models.cross_encoder import CrossEncoderScorer


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-cross-encoder"), "BertForSequenceClassification", num_labels=1)


PAIRS = [
    ("who founded the mill", "Edda Varrow founded Brannock Looms in 1874."),
    ("which river", "The Saltwhistle River runs through Hollin Ford."),
    ("a question", " ".join(["long passage"] * 300)),
]


def test_scores_one_float_per_pair_batched_like_single(tiny_cross_encoder):
    scorer = CrossEncoderScorer(tiny_cross_encoder, device="cpu", batch_size=2, max_length=64)
    scores = scorer.score(PAIRS)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    single = np.array([scorer.score([pair])[0] for pair in PAIRS])
    np.testing.assert_allclose(scores, single, atol=1e-5)
    assert len(set(np.round(scores, 6))) == 3  # the pairs are told apart
    assert scorer.score([]).shape == (0,)


def test_models_are_shared(tiny_cross_encoder):
    a = CrossEncoderScorer(tiny_cross_encoder, device="cpu", max_length=64)
    b = CrossEncoderScorer(tiny_cross_encoder, device="cpu", max_length=64)
    a.warm_up()
    b.warm_up()
    assert a._encoder is b._encoder
