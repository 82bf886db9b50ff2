"""Starting llama-cpp-python's OpenAI-compatible server on localhost for a registry model or GGUF path."""

import contextlib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from hopstack.models.llm import LLMServerError, check_llama_build
from hopstack.models.registry import resolve_model


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def llama_server(
    model: str, n_ctx: int = 2048, alias: str = "default", startup_timeout: float = 120.0, api_key: str | None = None
) -> Iterator[str]:
    """Run ``python -m llama_cpp.server`` for ``model`` on 127.0.0.1 and yield its ``/v1`` base URL.

    ``logits_all`` is on, since scoring needs log-probabilities; the server's log goes to a temporary
    file (its start-up output would fill a pipe) and is quoted if it fails to start. With ``api_key`` the
    server refuses requests without it (401). Stopped on exit. A llama.cpp build that would crash on the
    first prompt is refused first (:func:`~hopstack.models.llm.check_llama_build`).
    """
    check_llama_build()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hopstack-llama-server-") as folder:
        log = Path(folder) / "server.log"
        command = [
            sys.executable, "-m", "llama_cpp.server", "--model", resolve_model(model), "--model_alias", alias,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(n_ctx), "--logits_all", "True",
        ]  # fmt: skip
        if api_key:
            command += ["--api_key", api_key]
        with log.open("w") as sink:
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=sink)
        base = f"http://127.0.0.1:{port}/v1"
        try:
            deadline = time.time() + startup_timeout
            while True:
                if process.poll() is not None:
                    raise LLMServerError(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
                try:
                    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
                    urllib.request.urlopen(urllib.request.Request(f"{base}/models", headers=headers), timeout=2)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise LLMServerError(
                            f"llama_cpp.server did not answer within {startup_timeout:.0f} s"
                        ) from None
                    time.sleep(0.5)
            yield base
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
