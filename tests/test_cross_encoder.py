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


def test_scores_go_through_the_call_cache_keyed_by_a_trained_models_manifest(tiny_cross_encoder, monkeypatch, tmp_path):
    from hopstack.models.cache import saved_compute

    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path))
    monkeypatch.setenv("HOPSTACK_CACHE", "on")
    first = CrossEncoderScorer(tiny_cross_encoder, device="cpu", max_length=64)
    scores = first.score(PAIRS[:2])
    again = CrossEncoderScorer(tiny_cross_encoder, device="cpu", max_length=64)
    with saved_compute() as meter:
        np.testing.assert_allclose(again.score(PAIRS[:2]), scores, atol=1e-6)
    assert meter.seconds > 0  # served by the cache
    assert first._identity["version"] == ""  # no manifest: the path names the model
