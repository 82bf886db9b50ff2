"""The OpenAI-compatible backend against a real llama.cpp server that the test starts on localhost (one without
and one with an API key)."""

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from hopstack.models.llama_server import free_port, llama_server
from hopstack.models.llm import LlamaCppLLM, LLMServerError, OpenAICompatibleLLM, make_llm

pytest.importorskip("llama_cpp.server", reason="the server extra of llama-cpp-python is part of hopstack[local]")


KEY_ENV = "HOPSTACK_TEST_LLM_KEY"


@pytest.fixture(scope="module")
def server():
    with llama_server("smollm2-135m", n_ctx=512, alias="smollm2") as base:
        yield base


@pytest.fixture(scope="module")
def keyed_server():
    """A server started with --api_key: it answers 401 to requests without that key."""
    with llama_server("smollm2-135m", n_ctx=256, alias="smollm2", api_key="sesame") as base:
        yield base


@pytest.mark.slow
def test_generate_and_score_through_the_server(server):
    llm = OpenAICompatibleLLM(server, model="smollm2", concurrency=4)
    prompts = ["The capital of France is", [{"role": "user", "content": "Say hello."}], "One, two, three,"]
    texts = llm.generate(prompts, max_tokens=6)
    assert len(texts) == 3 and all(isinstance(t, str) for t in texts)
    assert texts == llm.generate(prompts, max_tokens=6)  # temperature 0
    [first] = llm.generate(["One, two, three,"], max_tokens=1)
    [[top, other]] = llm.score(["One, two, three,"], [first, "zebra"])
    assert top >= other and math.isfinite(top) and top > math.log(0.05)


@pytest.mark.slow
def test_generate_scored_through_the_server_matches_in_process_llama_cpp(server):
    remote = OpenAICompatibleLLM(server, model="smollm2")
    local = LlamaCppLLM("smollm2-135m", n_ctx=512)
    prompts = ["The capital of France is", [{"role": "user", "content": "Say hello."}]]
    for (text, log_probs), (local_text, local_log_probs) in zip(
        remote.generate_scored(prompts, max_tokens=2), local.generate_scored(prompts, max_tokens=2)
    ):
        assert text == local_text and len(log_probs) == len(local_log_probs)
        assert log_probs == pytest.approx(local_log_probs, abs=0.05)


@pytest.mark.slow
def test_server_and_in_process_backends_agree_on_the_greedy_token(server):
    remote = OpenAICompatibleLLM(server, model="smollm2")
    local = LlamaCppLLM("smollm2-135m", n_ctx=512)
    prompt = "The capital of France is"
    assert remote.generate([prompt], max_tokens=3) == local.generate([prompt], max_tokens=3)


@pytest.mark.slow
def test_the_api_key_comes_from_the_variable_that_api_key_env_names(keyed_server, monkeypatch):
    def llm():
        return make_llm({"type": "openai", "init_parameters": {"base_url": keyed_server, "api_key_env": KEY_ENV}})

    monkeypatch.setenv(KEY_ENV, "sesame")
    [text] = llm().generate(["One, two, three,"], max_tokens=2)
    assert isinstance(text, str)
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(LLMServerError, match=rf"needs an API key: set \${KEY_ENV} .*\(HTTP 401\)"):
        llm().generate(["One, two, three,"], max_tokens=2)
    monkeypatch.setenv(KEY_ENV, "wrong")
    with pytest.raises(LLMServerError, match=rf"refused the key in \${KEY_ENV} \(HTTP 401\)"):
        llm().score(["One, two, three,"], [" four"])


def test_without_a_key_requests_carry_no_authorization_header(monkeypatch):
    """A server that records each request's Authorization header and answers one completion."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            seen.append(self.headers.get("authorization"))
            choice = {"index": 0, "text": " four", "finish_reason": "length", "logprobs": None}
            body = json.dumps({"id": "1", "object": "text_completion", "created": 0, "model": "m", "choices": [choice]})
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    recorder = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{recorder.server_port}/v1"
        monkeypatch.delenv(KEY_ENV, raising=False)
        assert OpenAICompatibleLLM(base, api_key_env=KEY_ENV).generate(["One, two, three,"]) == [" four"]
        monkeypatch.setenv(KEY_ENV, "sesame")
        assert OpenAICompatibleLLM(base, api_key_env=KEY_ENV).generate(["One, two, three,"]) == [" four"]
        assert seen == [None, "Bearer sesame"]
    finally:
        recorder.shutdown()
        recorder.server_close()


def test_an_unreachable_server_fails_clearly_after_retries():
    llm = OpenAICompatibleLLM(f"http://127.0.0.1:{free_port()}/v1", timeout=1.0, max_retries=2)
    started = time.time()
    with pytest.raises(LLMServerError, match=r"LLM server http://127.0.0.1:\d+/v1 failed after 2 retries"):
        llm.generate(["hello"])
    assert time.time() - started < 30


def test_a_server_that_never_answers_times_out_and_fails_clearly():
    """A server that accepts connections but never replies: each try times out, then a clear error."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held = []
    stop = threading.Event()

    def accept_and_hold():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept_and_hold, daemon=True)
    thread.start()
    try:
        llm = OpenAICompatibleLLM(f"http://127.0.0.1:{listener.getsockname()[1]}/v1", timeout=0.5, max_retries=1)
        started = time.time()
        with pytest.raises(LLMServerError, match="failed after 1 retries: APITimeoutError"):
            llm.score(["hello"], ["yes"])
        assert len(held) >= 2 and time.time() - started < 20  # the first try and one retry
    finally:
        stop.set()
        thread.join()
        listener.close()
        for connection in held:
            connection.close()
