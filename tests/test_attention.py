"""ICR attention reranking: the calibration rule, exact token spans, the KV-cache path against a full
forward pass, and the reranker contract, on the tiny Llama the test session builds."""

import numpy as np
import pytest
import torch
from haystack import Document

from hopstack.components.attention import AttentionReranker, _eager_attention, calibrated_scores
from hopstack.testing import assert_run_batch_matches_run

PASSAGES = ["the mill opened in 1820", "bananas are yellow", "the river floods every spring near the mill"]


@pytest.fixture(scope="module")
def icr(tiny_model_dir):
    reranker = AttentionReranker(llm=tiny_model_dir, device="cpu", top_k=3)
    reranker.warm_up()
    return reranker


def test_calibration_subtracts_the_content_free_query_and_masks_low_outliers():
    real = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -9.0, 5.0, 5.0])
    content_free = np.zeros(12)
    scores = calibrated_scores(real, content_free, [(0, 10), (10, 12), (12, 12)])
    assert scores.tolist() == [9.0, 10.0, 0.0], "the -9 token is below mean - 2 std and masked; an empty span is 0"
    assert calibrated_scores(real, real, [(0, 12)]).tolist() == [0.0]


def test_prompt_spans_are_exactly_each_passage(icr):
    context, spans, query_ids, closing = icr.prompt_parts("when did the mill open?", PASSAGES)
    decode = icr._backend._tokenizer.decode
    assert [decode(context[a:b]) for a, b in spans] == PASSAGES
    assert spans[2][0] < spans[1][0] < spans[0][0], "reverse_doc_order: the first-stage best is listed last"
    assert decode(query_ids) == "when did the mill open?" and closing == []
    assert decode(context).endswith("paragraphs above. query :")


def test_kv_cache_path_equals_attention_of_one_full_forward_pass(icr):
    context, spans, query_ids, closing = icr.prompt_parts("when did the mill open?", PASSAGES)
    with icr._backend.locked() as model:
        implementation = model.config._attn_implementation
    [cached] = icr._query_attention(context, [query_ids], closing)
    with icr._backend.locked() as model, _eager_attention(model), torch.inference_mode():
        out = model(input_ids=torch.tensor([context + query_ids + closing]), output_attentions=True)
    rows = slice(len(context), len(context) + len(query_ids))
    full = sum(layer[0, :, rows, : len(context)].sum(0) for layer in out.attentions).mean(0).numpy()
    assert np.allclose(cached, full, atol=1e-5)
    assert model.config._attn_implementation == implementation, "the model's attention setting is restored"


def test_icr_reranks_every_candidate_and_batches_like_run(icr):
    documents = [Document(id=str(i), content=p, score=1.0) for i, p in enumerate(PASSAGES)]
    out = icr.run(query="when did the mill open?", documents=documents)
    assert sorted(d.id for d in out["documents"]) == ["0", "1", "2"]
    expected = icr.scores("when did the mill open?", PASSAGES)
    assert [d.score for d in out["documents"]] == pytest.approx(sorted(expected.tolist(), reverse=True))
    inputs = [
        {"query": "q one", "documents": documents, "top_k": 2},
        {"query": "q two", "documents": documents[:1], "top_k": None},
        {"query": "q three", "documents": [], "top_k": None},
    ]
    assert_run_batch_matches_run(icr, inputs)


def test_icr_refuses_a_backend_without_attention_weights():
    with pytest.raises(ValueError, match="transformers backend"):
        AttentionReranker(llm={"type": "llama.cpp", "init_parameters": {"model": "smollm2-135m"}})
    with pytest.raises(ValueError, match="task must be one of"):
        AttentionReranker(task="summarise")
