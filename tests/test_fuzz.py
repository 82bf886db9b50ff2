"""Fuzzing the inputs a user or a client controls (hypothesis, bounded): pipeline files, corpus and questions
lines, and HTTP request bodies. Each must end in a clean refusal (a validation problem, HopstackInputError,
a 4xx) or a result, never a crash or a 5xx."""

import json
import random

import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import YAML_DIR
from hopstack.datasets.questions import read_questions
from hopstack.errors import HopstackInputError
from hopstack.index.formats import read_corpus
from hopstack.spec.validate import validate_text
from hopstack.testing import YAML_SNIPPETS, mutate_data, mutate_text, replace_somewhere

SHIPPED = [p.read_text(encoding="utf-8") for p in sorted(YAML_DIR.glob("*.yaml"))]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@FUZZ
@given(st.integers(0, len(SHIPPED) - 1), st.integers(0, 2**32), json_values)
def test_mutated_pipeline_files_get_problems_or_pass_never_an_exception(which, seed, value):
    data = yaml.safe_load(SHIPPED[which])
    text = yaml.safe_dump(replace_somewhere(data, random.Random(seed), value), allow_unicode=True)
    parsed, problems = validate_text(text, "fuzz.yaml")
    assert all(p.source == "fuzz.yaml" and p.line >= 1 and len(p.message) < 2000 for p in problems)


@pytest.mark.parametrize("seed", range(4))
def test_seeded_mutants_of_every_shipped_file_get_problems_or_pass(seed):
    """The mutations benchmarks/fuzz.py makes at scale (keys deleted, renamed, duplicated; values retyped or
    odd; lines cut, repeated, re-indented; aliases, tags, deep nesting), 50 of them per seed."""
    rng = random.Random(seed)
    for number in range(50):
        text = SHIPPED[number % len(SHIPPED)]
        if number % 2:
            text = yaml.safe_dump(mutate_data(yaml.safe_load(text), rng, rng.randint(1, 3)), allow_unicode=True)
        else:
            text = mutate_text(text, rng, YAML_SNIPPETS)
        _, problems = validate_text(text, "fuzz.yaml")
        assert not any(p.message.startswith("cannot check this file") for p in problems), problems


@FUZZ
@given(st.text(max_size=300))
def test_arbitrary_text_as_a_pipeline_file_never_raises(text):
    validate_text(text, "fuzz.yaml")


@FUZZ
@given(st.lists(json_values | st.text(max_size=30), min_size=1, max_size=4), st.sampled_from(["jsonl", "beir"]))
def test_corpus_lines_are_read_or_refused_cleanly(tmp_path_factory, lines, corpus_format):
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(v) if not isinstance(v, str) else v for v in lines), encoding="utf-8")
    try:
        read_corpus(path, corpus_format)
    except HopstackInputError as exc:
        assert str(path) in str(exc)


@FUZZ
@given(st.lists(json_values, min_size=1, max_size=4))
def test_questions_lines_are_read_or_refused_cleanly(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("questions") / "questions.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records), encoding="utf-8")
    try:
        read_questions(path)
    except HopstackInputError as exc:
        assert str(path) in str(exc)


@pytest.fixture(scope="module")
def service(sample_corpus):
    from hopstack.serve import ServedPipeline, create_app
    from hopstack.testing import wait_ready

    pipeline = ServedPipeline("bm25", YAML_DIR / "bm25.yaml", {"index": str(sample_corpus)})
    with TestClient(create_app([pipeline])) as client:
        wait_ready(client)
        yield client


@FUZZ
@given(
    st.sampled_from(["/v1/answer", "/v1/retrieve"]),
    st.one_of(
        st.dictionaries(st.sampled_from(["question", "pipeline", "top_k", "return", "x"]), json_values, max_size=4),
        json_values,
    ),
)
def test_request_bodies_get_an_answer_or_a_4xx_never_a_5xx(service, route, body):
    response = service.post(route, content=json.dumps(body), headers={"content-type": "application/json"})
    assert response.status_code in (200, 400, 404, 413, 422), response.text
    assert "/work/" not in response.text and "Traceback" not in response.text
