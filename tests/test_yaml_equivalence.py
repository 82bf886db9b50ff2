"""Every pipeline in yaml/: the batched runner gives what haystack.Pipeline.run gives, and the service
answers with exactly the documents and answer that evaluation scores."""

import pytest
from haystack import Pipeline

from conftest import TINY_LLM, YAML_DIR
from hopstack.core.spec import init_parameter_names, is_spec, resolve_component_class, resolve_nested_class
from hopstack.experiments.metrics import final_documents, predicted_answer
from hopstack.graphs import BatchRunner
from hopstack.serve import Query, ServedPipeline
from hopstack.spec.loading import load_pipeline, load_pipeline_data
from hopstack.testing import assert_outputs_equal

PIPELINES = sorted(YAML_DIR.glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("path", PIPELINES, ids=[p.stem for p in PIPELINES])
def test_runner_equals_haystack_pipeline_run_and_serve_returns_what_eval_scores(
    path, sample_corpus, sample_questions, tiny_model_dir, tmp_path, monkeypatch
):
    # LLM stages run the tiny SmolLM2 (greedy, so both runners see the same text) on fewer questions,
    # with short generations, short passages and fewer candidates (llama.cpp reads ~100 tokens/s here)
    overrides = {"index": str(sample_corpus), "llm": TINY_LLM, "max_tokens": 48, "max_passage_words": 40}
    components = load_pipeline_data(path)["components"].values()
    uses_llm = any(_uses_llm(resolve_component_class(spec["type"]), spec.get("init_parameters")) for spec in components)
    questions = sample_questions[:2] if uses_llm else sample_questions[:24]  # each also runs alone under Haystack
    if uses_llm:
        overrides["top_k"] = 3
    if any(spec["type"].endswith("AttentionReranker") for spec in components):
        overrides["llm"] = tiny_model_dir  # attention weights need the transformers backend: the tiny Llama

    # the evaluation path, with a call cache of its own that the service's run then reads (same LLM text)
    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path))
    monkeypatch.setenv("HOPSTACK_CACHE", "on")
    runner = BatchRunner(load_pipeline(path, overrides), batch_size=7)
    inputs = [runner.question_input(q.question) for q in questions]
    batched = runner.run(inputs).outputs
    assert all(out for out in batched), "every question produced an output"

    served = ServedPipeline(path.stem, path, overrides, batch_size=7)
    bodies = served.answer([Query(q.question) for q in questions])
    for outputs, body in zip(batched, bodies):
        assert [d["id"] for d in body["documents"]] == [d.id for d in final_documents(outputs)]
        predicted = predicted_answer(outputs)
        assert (body["answer"] or {}).get("text") == (predicted[0] if predicted else None)

    # Haystack's own loader on the same file (allowlisted to hopstack), one question at a time, no cache.
    monkeypatch.setenv("HOPSTACK_CACHE", "off")
    text = path.read_text(encoding="utf-8")
    haystack_pipeline = Pipeline.loads(text, allowed_modules=["hopstack"])
    assert haystack_pipeline.to_dict()["components"].keys() == load_pipeline_data(path)["components"].keys()
    haystack_pipeline = Pipeline.from_dict(load_pipeline_data(path, overrides), allowed_modules=["hopstack"])
    single = [haystack_pipeline.run(dict(item)) for item in inputs]
    assert_outputs_equal(batched, single, rel=1e-4)


def _uses_llm(cls: type, params: dict | None) -> bool:
    """Whether a component, or a spec nested in its init parameters, takes an LLM."""
    return "llm" in init_parameter_names(cls) or any(
        _uses_llm(resolve_nested_class(value["type"]), value.get("init_parameters"))
        for value in (params or {}).values()
        if is_spec(value)
    )


def test_every_component_is_used_by_a_shipped_pipeline():
    """Each hopstack component class appears in yaml/ or demos/ (as a component or a nested spec), so the
    test above and the demos run it."""
    from hopstack.spec.validate import known_component_types

    shipped = "\n".join(p.read_text(encoding="utf-8") for p in [*PIPELINES, *YAML_DIR.parent.glob("demos/*.yaml")])
    unused = [t for t in known_component_types() if t.startswith("hopstack.") and t not in shipped]
    assert not unused, f"components no shipped pipeline uses: {unused}"
