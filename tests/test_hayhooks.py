"""Serving a hopstack pipeline file with Hayhooks: demos/hayhooks/qa/pipeline_wrapper.py under a real
``hayhooks run`` server on localhost (optional dependency: ``pip install "hayhooks>=2.1"``)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import REPO, YAML_DIR
from hopstack.testing import free_port, stop_process

pytest.importorskip(
    "hayhooks",
    exc_type=ImportError,
    reason="hayhooks is not installed or does not import (pip install 'hayhooks>=2.1')",
)

PIPELINES_DIR = REPO / "demos" / "hayhooks"


def wait_deployed(client: httpx.Client, server: subprocess.Popen, name: str, seconds: float = 120.0) -> None:
    """Poll Hayhooks' ``/status`` until it answers, then check that it lists pipeline ``name``: Hayhooks deploys
    the pipelines dir before it accepts connections, and skips (with a warning) a pipeline that fails to load."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert server.poll() is None, f"hayhooks exited with code {server.returncode}"
        try:
            status = client.get("/status").json()
        except httpx.TransportError:
            time.sleep(0.25)
            continue
        assert name in status["pipelines"], f"hayhooks is up without pipeline '{name}': {status['pipelines']}"
        return
    raise TimeoutError(f"hayhooks did not answer within {seconds:g} s")


@pytest.mark.slow
def test_hayhooks_serves_a_hopstack_pipeline(sample_corpus, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "HOPSTACK_HAYHOOKS_PIPELINE": str(YAML_DIR / "bm25.yaml"),
        "HOPSTACK_INDEX": str(sample_corpus),
        "HAYSTACK_TELEMETRY_ENABLED": "False",
    }
    # the console script beside this interpreter (hayhooks' __main__ does nothing)
    command = [str(Path(sys.executable).with_name("hayhooks")), "run", "--host", "127.0.0.1", "--port", str(port)]
    log = (tmp_path / "hayhooks.log").open("w+", encoding="utf-8")
    # cwd: a folder without a .env file, which Hayhooks' settings would read
    server = subprocess.Popen(
        [*command, "--pipelines-dir", str(PIPELINES_DIR)], env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            try:
                wait_deployed(client, server, "qa")
            except (AssertionError, TimeoutError) as exc:
                log.seek(0)
                pytest.fail(f"{exc}; hayhooks' log:\n{log.read()[-4000:]}")
            response = client.post("/qa/run", json={"question": "Who founded the Penhallow Ferry Company?", "top_k": 3})
            assert response.status_code == 200, response.text
            result = response.json()["result"]
            assert result["pipeline"] == "bm25.yaml"
            assert len(result["documents"]) == 3
            assert result["documents"][0]["meta"]["title"] == "Penhallow Ferry Company"
            assert result["documents"][0]["score"] >= result["documents"][1]["score"]
    finally:
        stop_process(server, timeout_s=30)
        log.close()
