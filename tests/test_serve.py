"""The HTTP service: endpoints, validation, micro-batching through the app, a reader pipeline's answers and
clues, and a real ``hopstack serve`` process shut down gracefully while requests are in flight."""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import REPO, TINY_LLM, YAML_DIR
from hopstack.errors import HopstackInputError
from hopstack.serve import ServedPipeline, ServiceLimits, create_app
from hopstack.testing import free_port, wait_ready

QUESTION = "Who founded the Penhallow Ferry Company?"


def served(sample_corpus, *names: str, **overrides) -> list[ServedPipeline]:
    return [
        ServedPipeline(name, YAML_DIR / f"{name}.yaml", {"index": str(sample_corpus), **overrides}) for name in names
    ]


@pytest.fixture(scope="module")
def client(sample_corpus):
    limits = ServiceLimits(max_batch=16, max_wait_ms=150, max_question_chars=200, max_top_k=20, max_body_bytes=4096)
    with TestClient(create_app(served(sample_corpus, "bm25", "hybrid"), limits)) as test_client:
        wait_ready(test_client)
        yield test_client


def test_answer_returns_documents_and_timings(client):
    started = time.perf_counter()
    response = client.post("/v1/answer", json={"question": QUESTION, "top_k": 3})
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["pipeline"] == "bm25" and body["question"] == QUESTION
    assert len(body["documents"]) == 3 and body["documents"][0]["meta"]["title"] == "Penhallow Ferry Company"
    assert body["answer"] is None  # a retrieval pipeline has no reader
    assert "trace" not in body and "clues" not in body
    timings = body["timings"]
    assert [s["node"] for s in timings["stages"]] == ["bm25"] and timings["batch_size"] == 1
    # the stages ran inside the batch, the batch after its wait in the queue, all within the request
    assert 0 < timings["stages"][0]["ms"] <= timings["batch_ms"]
    assert timings["queue_ms"] + timings["batch_ms"] <= timings["total_ms"] <= elapsed_ms


def test_top_k_reaches_the_final_node_and_trace_holds_every_node(client):
    body = client.post(
        "/v1/answer", json={"question": QUESTION, "pipeline": "hybrid", "top_k": 2, "return": ["documents", "trace"]}
    ).json()
    assert len(body["documents"]) == 2
    assert set(body["trace"]["nodes"]) == {"bm25", "dense", "fuse"}
    assert len(body["trace"]["nodes"]["fuse"]["documents"]) == 2  # top_k went to the fusion node, not a cut
    assert len(body["trace"]["nodes"]["bm25"]["documents"]) > 2
    assert "answer" not in body


def test_retrieve(client):
    body = client.post("/v1/retrieve", json={"question": QUESTION, "pipeline": "hybrid"}).json()
    assert len(body["documents"]) == 10 and set(body) == {"pipeline", "question", "documents", "timings"}


def test_pipelines_health_metrics_docs_graph_and_page(client, sample_questions):
    listed = client.get("/v1/pipelines").json()
    assert listed["default"] == "bm25" and [p["name"] for p in listed["pipelines"]] == ["bm25", "hybrid"]
    # the page's placeholder: the first question of the dataset whose corpus the index holds (the sample's)
    assert listed["pipelines"][0]["sample_question"] == sample_questions[0].question
    hybrid = listed["pipelines"][1]
    assert hybrid["mermaid"].startswith("flowchart LR") and "n_bm25 -- " in hybrid["mermaid"]
    assert hybrid["retrieves"] and not hybrid["answers"]
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["ready"] is True
    svg = client.get("/v1/pipelines/hybrid/graph.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and "<svg" in svg.text
    assert client.get("/v1/pipelines/nope/graph.svg").status_code == 404
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/answer", "/v1/retrieve", "/v1/pipelines", "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "/page/app.js" in page.text
    assert client.get("/page/app.js").status_code == 200
    client.post("/v1/answer", json={"question": ""})
    metrics = client.get("/metrics").text
    assert 'hopstack_requests_total{endpoint="/v1/answer",pipeline="bm25",status="200"}' in metrics
    assert 'hopstack_batch_size_count{pipeline="bm25"}' in metrics
    assert 'hopstack_request_seconds_bucket{endpoint="/v1/answer",le="0.005",pipeline="bm25"}' in metrics
    assert 'hopstack_errors_total{endpoint="/v1/answer",kind="validation"}' in metrics
    assert "hopstack_ready 1.0" in metrics


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"question": ""}, 422, "question: String should have at least 1 character"),
        ({"question": "   "}, 422, "question: String should have at least 1 character"),
        ({"question": "x" * 201}, 422, "question: String should have at most 200 characters"),
        ({}, 422, "question: Field required"),
        ({"question": 7}, 422, "question: Input should be a valid string"),
        ({"question": "q", "top_k": 0}, 422, "top_k: Input should be greater than or equal to 1"),
        ({"question": "q", "top_k": 21}, 422, "top_k: Input should be less than or equal to 20"),
        ({"question": "q", "top_k": "many"}, 422, "top_k: Input should be a valid integer"),
        ({"question": "q", "pipeline": "nope"}, 404, "unknown pipeline 'nope'; served: bm25, hybrid"),
        ({"question": "q", "pipeline": "../yaml/bm25.yaml"}, 404, "unknown pipeline '../yaml/bm25.yaml'"),
        ({"question": "q", "components": {"x": {"type": "os.system"}}}, 422, "components: Extra inputs"),
        ({"question": "q", "index": "/etc"}, 422, "index: Extra inputs are not permitted"),
        ({"question": "q", "return": ["secrets"]}, 422, "return.0: Input should be 'documents', 'clues'"),
        ({"question": "q", "padding": "p" * 5000}, 413, "Content Too Large"),
    ],
)
def test_bad_input_is_a_4xx_with_a_message(client, body, status, message):
    response = client.post("/v1/answer", json=body)
    assert response.status_code == status, response.text
    assert message in (response.json()["detail"] if status != 413 else response.text)


def test_malformed_json_and_wrong_method(client):
    response = client.post("/v1/answer", content=b'{"question": ', headers={"content-type": "application/json"})
    assert response.status_code == 422 and "body is not valid JSON" in response.json()["detail"]
    assert client.get("/v1/answer").status_code == 405
    assert client.get("/v1/nothing").status_code == 404


def test_concurrent_requests_share_one_runner_call(client):
    questions = [f"{QUESTION} ({i})" for i in range(6)]
    bodies: list[dict] = [{} for _ in questions]

    def ask(i: int) -> None:
        bodies[i] = client.post("/v1/answer", json={"question": questions[i], "pipeline": "hybrid"}).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [b["question"] for b in bodies] == questions  # every response goes back to its own request
    assert max(b["timings"]["batch_size"] for b in bodies) > 1


def test_a_request_that_waits_too_long_gets_a_504(sample_corpus):
    limits = ServiceLimits(max_wait_ms=300, timeout_s=0.02)
    with TestClient(create_app(served(sample_corpus, "bm25"), limits)) as test_client:
        wait_ready(test_client)
        response = test_client.post("/v1/answer", json={"question": QUESTION})
        assert response.status_code == 504 and "no result within 0.02 s" in response.json()["detail"]
        assert 'hopstack_errors_total{endpoint="/v1/answer",kind="timeout"} 1.0' in test_client.get("/metrics").text


def test_an_index_of_ones_own_documents_has_no_sample_question(tmp_path):
    (tmp_path / "looms.md").write_text("# Brannock Looms\n\nFounded in 1871.\n", encoding="utf-8")
    assert ServedPipeline("bm25", YAML_DIR / "bm25.yaml", {"index": str(tmp_path)}).sample_question is None


def test_duplicate_names_are_refused(sample_corpus):
    with pytest.raises(HopstackInputError, match="same name"):
        create_app(served(sample_corpus, "bm25", "bm25"))


@pytest.mark.slow
def test_reader_pipeline_answers_with_clues_and_retrieve_skips_the_llm(sample_corpus):
    pipeline = served(sample_corpus, "hybrid-rerank-compselect-reader", llm=TINY_LLM, max_tokens=8)[0]
    assert (pipeline.documents_node, pipeline.clue_node, pipeline.answer_node) == ("rerank", "truncate", "reader")
    with TestClient(create_app([pipeline])) as test_client:
        wait_ready(test_client)
        body = test_client.post("/v1/answer", json={"question": QUESTION, "return": ["documents", "clues", "answer"]})
        body = body.json()
        assert 1 <= len(body["clues"]) <= 10 and all(c["meta"].get("source_id") for c in body["clues"])
        # the documents are what evaluation scores: those the reader read, here the clues
        assert [d["id"] for d in body["documents"]] == [c["id"] for c in body["clues"]] == body["answer"]["documents"]
        assert isinstance(body["answer"]["text"], str) and 0 <= body["answer"]["confidence"] <= 1
        assert body["answer"]["supported"] is (body["answer"]["unsupported_because"] == [])
        cut = test_client.post("/v1/answer", json={"question": QUESTION, "top_k": 2, "return": ["documents", "clues"]})
        cut = cut.json()  # top_k cuts the documents shown; the reader still reads what the file says
        assert [d["id"] for d in cut["documents"]] == [d["id"] for d in body["documents"][:2]]
        assert cut["clues"] == body["clues"]
        retrieved = test_client.post("/v1/retrieve", json={"question": QUESTION}).json()
        assert len(retrieved["documents"]) == 5  # the retrieval stage's documents: what the reranker kept
        assert {c["meta"]["source_id"] for c in body["clues"]} <= {d["id"] for d in retrieved["documents"]}
        assert [s["node"] for s in retrieved["timings"]["stages"]] == ["bm25", "dense", "fuse", "rerank"]


@pytest.mark.slow
def test_served_process_drains_in_flight_requests_on_sigterm(sample_corpus, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "hopstack", "serve", str(YAML_DIR / "bm25.yaml"), "--index", str(sample_corpus)]
    command += ["--port", str(port), "--max-wait-ms", "1500"]
    env = {**os.environ, "HOPSTACK_HOME": str(tmp_path)}
    server = subprocess.Popen(command, cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(httpx.Client(base_url=url), seconds=120)
        responses: list[httpx.Response | None] = [None] * 5

        def ask(i: int) -> None:
            responses[i] = httpx.post(f"{url}/v1/answer", json={"question": f"{QUESTION} {i}"}, timeout=30)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(5)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)  # the requests are queued: their batch waits up to 1.5 s for company
        server.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join()
        # uvicorn re-raises the captured SIGTERM after its graceful shutdown
        assert server.wait(timeout=30) in (0, -signal.SIGTERM), server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
    assert all(r is not None and r.status_code == 200 for r in responses)
    assert [r.json()["timings"]["batch_size"] for r in responses] == [5] * 5
    assert json.loads(responses[0].text)["documents"][0]["meta"]["title"] == "Penhallow Ferry Company"
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=1)


def test_serve_refuses_a_bad_pipeline_file_before_listening(cli, write_yaml):
    code, _, err = cli("serve", "missing.yaml")
    assert code == 2 and "missing.yaml" in err
    broken = write_yaml("components:\n  bm25:\n    type: hopstack.components.retrieval.NoSuchRetriever\n")
    code, _, err = cli("serve", str(broken))
    assert code == 2 and "pipeline.yaml:3:11: component 'bm25': unknown c" in err


def test_unknown_paths_share_one_metrics_label_and_an_empty_pipeline_name_is_refused(client):
    for i in range(20):
        assert client.get(f"/random-{i}").status_code == 404
    metrics = client.get("/metrics").text
    assert "random-" not in metrics and 'endpoint="unmatched",kind="validation"' in metrics
    response = client.post("/v1/answer", json={"question": QUESTION, "pipeline": ""})
    assert response.status_code == 404 and "unknown pipeline ''" in response.json()["detail"]


def test_hosts_api_key_and_cors_when_exposed(sample_corpus):
    from hopstack.serve import ServiceAccess
    from hopstack.serve.app import without_paths

    access = ServiceAccess(allowed_hosts=("qa.example",), api_key="s3cret", cors_origins=("https://ui.example",))
    with TestClient(create_app(served(sample_corpus, "bm25"), access=access), base_url="http://qa.example") as c:
        wait_ready(c)
        assert c.post("/v1/answer", json={"question": QUESTION}).status_code == 401
        assert c.post("/v1/answer", json={"question": QUESTION}, headers={"X-API-Key": "wrong"}).status_code == 401
        ok = c.post("/v1/answer", json={"question": QUESTION}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["documents"]
        assert c.get("/healthz").status_code == 200  # health and the page need no key
        assert c.get("/healthz", headers={"host": "evil.example"}).status_code == 400
        preflight = c.options(
            "/v1/answer",
            headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.headers["access-control-allow-origin"] == "https://ui.example"
    assert without_paths("index '/srv/data/mhr-index' failed") == "index '…/mhr-index' failed"
