"""The transformers LLM backend on a tiny randomly initialised causal LM that the test builds
(MiniLM's WordPiece tokenizer, a 2-layer Llama): batching, scoring and truncation rules."""

import math

import numpy as np
import pytest

from hopstack.models.llm import TransformersLLM


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    model = TransformersLLM(tiny_model_dir, device="cpu", batch_size=3, n_ctx=64)
    model.warm_up()
    return model


PROMPTS = ["the cat sat on the", "a much longer prompt about rivers towns and old mills", "hello", "one two three"]


def test_batched_generation_equals_one_at_a_time(llm):
    batched = llm.generate(PROMPTS, max_tokens=5)
    single = [llm.generate([p], max_tokens=5)[0] for p in PROMPTS]
    assert batched == single and all(isinstance(t, str) for t in batched)
    longest = max(batched, key=len)
    marker = longest[len(longest) // 2 :][:2]
    [stopped] = llm.generate([PROMPTS[batched.index(longest)]], max_tokens=5, stop=[marker])
    assert stopped == longest.split(marker, 1)[0] and len(stopped) < len(longest)


def test_scores_are_log_probabilities_consistent_across_paths_and_batches(llm):
    single_token = ["river", "town", "cat"]
    batched = llm.score(PROMPTS, single_token)
    alone = [llm.score([p], single_token)[0] for p in PROMPTS]
    np.testing.assert_allclose(batched, alone, atol=1e-4)
    # the multi-token path (forced by a two-token candidate) gives the same single-token scores
    mixed = llm.score(PROMPTS, [*single_token, "old mills"])
    np.testing.assert_allclose([row[:3] for row in mixed], batched, atol=1e-4)
    assert all(v <= 0 and math.isfinite(v) for row in mixed for v in row)
    for row in mixed:
        assert row[3] < 0  # a two-token continuation


def test_over_long_prompts_are_cut_to_the_window(llm):
    before = llm.truncated
    long_prompt = " ".join(["word"] * 200)
    assert isinstance(llm.generate([long_prompt], max_tokens=4)[0], str)
    assert math.isfinite(llm.score([long_prompt], ["cat"])[0][0])
    assert llm.truncated == before + 2


def test_chat_messages_need_a_chat_template(llm):
    with pytest.raises(ValueError, match="has no chat template"):
        llm.render([{"role": "user", "content": "hi"}])


def test_generate_scored_equals_greedy_generation_batched_or_alone(llm):
    scored = llm.generate_scored(PROMPTS, max_tokens=5)
    assert [text for text, _ in scored] == llm.generate(PROMPTS, max_tokens=5)
    alone = [llm.generate_scored([p], max_tokens=5)[0] for p in PROMPTS]
    for (text, log_probs), (text_alone, log_probs_alone) in zip(scored, alone):
        assert text == text_alone and len(log_probs) <= 5
        np.testing.assert_allclose(log_probs, log_probs_alone, atol=1e-4)
        assert all(v <= 0 for v in log_probs)
    [(_, [first, *_])] = llm.generate_scored([PROMPTS[0]], max_tokens=5)
    others = llm.score([PROMPTS[0]], ["river", "town", "cat"])[0]
    assert first >= max(others) - 1e-6, "the greedy token is the likeliest"
