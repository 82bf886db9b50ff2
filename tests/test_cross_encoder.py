"""The cross-encoder scorer on a tiny randomly initialised BERT built by the test (MiniLM's tokenizer)."""

import numpy as np
import pytest

from hopstack.models.cross_encoder import CrossEncoderScorer


@pytest.fixture(scope="module")
def tiny_cross_encoder(tmp_path_factory):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from hopstack.models.registry import resolve_model

    folder = tmp_path_factory.mktemp("tiny-cross-encoder")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, num_labels=1,
    )  # fmt: skip
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


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
