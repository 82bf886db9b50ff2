"""Every pipeline in yaml/ gives the same outputs under hopstack's runner as under haystack.Pipeline.run."""

import pytest
from haystack import Pipeline

from conftest import TINY_LLM, YAML_DIR
from hopstack.graphs import BatchRunner
from hopstack.spec.loading import load_pipeline, load_pipeline_data
from hopstack.spec.validate import init_parameter_names, resolve_component_class
from hopstack.testing import assert_outputs_equal

PIPELINES = sorted(YAML_DIR.glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_runner_equals_haystack_pipeline_run(path, sample_corpus, sample_questions, tiny_model_dir):
    # LLM stages run the tiny SmolLM2 (greedy, so both runners see the same text) on fewer questions,
    # with short generations, short passages and fewer candidates (llama.cpp reads ~100 tokens/s here)
    overrides = {"index": str(sample_corpus), "llm": TINY_LLM, "max_tokens": 48, "max_passage_words": 40}
    uses_llm = any(_uses_llm(spec) for spec in load_pipeline_data(path)["components"].values())
    questions = sample_questions[:2] if uses_llm else sample_questions
    if uses_llm:
        overrides["top_k"] = 3
    if any(spec["type"].endswith("AttentionReranker") for spec in load_pipeline_data(path)["components"].values()):
        overrides["llm"] = tiny_model_dir  # attention weights need the transformers backend: the tiny Llama
    runner = BatchRunner(load_pipeline(path, overrides), batch_size=7)
    inputs = [runner.question_input(q.question) for q in questions]
    batched = runner.run(inputs).outputs

    # Haystack's own loader on the same file (allowlisted to hopstack), one question at a time.
    text = path.read_text(encoding="utf-8")
    haystack_pipeline = Pipeline.loads(text, allowed_modules=["hopstack"])
    assert haystack_pipeline.to_dict()["components"].keys() == load_pipeline_data(path)["components"].keys()
    haystack_pipeline = Pipeline.from_dict(load_pipeline_data(path, overrides), allowed_modules=["hopstack"])
    single = [haystack_pipeline.run(dict(item)) for item in inputs]

    assert_outputs_equal(batched, single, rel=1e-4)
    assert all(out for out in batched), "every question produced an output"


def _uses_llm(spec: dict) -> bool:
    """Whether a component spec, or a spec nested in its init parameters, takes an LLM."""
    params = spec.get("init_parameters") or {}
    return "llm" in init_parameter_names(resolve_component_class(spec["type"])) or any(
        isinstance(value, dict) and ("llm" in value or ("." in str(value.get("type", "")) and _uses_llm(value)))
        for value in params.values()
    )


def test_every_yaml_file_is_covered():
    assert {p.stem for p in PIPELINES} >= {"bm25", "dense", "hybrid"}
