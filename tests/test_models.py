"""The offline model registry (GGUF reassembly, hash checks, names) and the llama.cpp LLM backend."""

import hashlib

import pytest

from hopstack.errors import HopstackInputError
from hopstack.models import registry
from hopstack.models.registry import (
    REGISTRY,
    ModelIntegrityError,
    RegisteredModel,
    WheelSlice,
    ensure_model,
    resolve_model,
)


def test_unknown_bare_names_suggest_the_nearest_and_hub_ids_pass_through():
    nearest = r"unknown model 'qwen2.5'.*did you mean 'qwen2.5-1.5b', 'qwen2.5-0.5b'"
    with pytest.raises(HopstackInputError, match=nearest):
        resolve_model("qwen2.5")
    with pytest.raises(HopstackInputError, match="did you mean 'minilm'"):
        resolve_model("minilmm")
    assert resolve_model("sentence-transformers/all-mpnet-base-v2") == "sentence-transformers/all-mpnet-base-v2"
    assert resolve_model("gpt2") == "gpt2"


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A two-slice 'GGUF' whose slices sit in files, as installed distributions would hold them."""
    parts = [b"GGUF" + bytes(range(200)) * 50, bytes(reversed(range(256))) * 40]
    files = {}
    for i, data in enumerate(parts):
        files[f"part{i}"] = tmp_path / f"part{i}.bin"
        files[f"part{i}"].write_bytes(data)
    whole = b"".join(parts)
    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(registry, "_installed_member", lambda piece: files[piece.member])

    def register(sha256: str) -> str:
        model = RegisteredModel(
            name="fake", role="test", source="test", kind="gguf", filename="fake.gguf", sha256=sha256,
            size=len(whole), slices=tuple(WheelSlice("fake-pkg", "1.0", f"part{i}") for i in range(len(parts))),
        )  # fmt: skip
        monkeypatch.setitem(REGISTRY, "fake", model)
        return "fake"

    return register, whole, tmp_path / "home" / "models"


def test_slices_are_reassembled_in_order_and_hash_checked(fake_model):
    register, whole, home = fake_model
    name = register(hashlib.sha256(whole).hexdigest())
    seen = []
    path = ensure_model(name, lambda done, total: seen.append((done, total)))
    assert path == home / "fake.gguf" and path.read_bytes() == whole
    assert seen[-1] == (len(whole), len(whole))
    assert resolve_model(name) == str(path)


def test_a_hash_mismatch_is_refused_and_nothing_is_left(fake_model):
    register, _, home = fake_model
    name = register("0" * 64)
    with pytest.raises(ModelIntegrityError, match="reassembled file has sha256 .* the file was deleted"):
        ensure_model(name)
    assert list(home.iterdir()) == []


def test_models_cli_lists_and_refuses_unknown_names(cli):
    code, out, _ = cli("models", "list")
    assert code == 0 and "qwen2.5-0.5b" in out and "smollm2-135m" in out and "minilm" in out
    code, _, err = cli("models", "pull", "qwen-0.5b")
    assert code == 2 and "did you mean 'qwen2.5-0.5b'" in err


def test_make_llm_picks_the_backend_from_the_spec():
    from hopstack.models.llm import LlamaCppLLM, OpenAICompatibleLLM, TransformersLLM, make_llm

    assert isinstance(make_llm("qwen2.5-0.5b"), LlamaCppLLM)
    assert isinstance(make_llm("/models/some-model.Q4_K_M.gguf"), LlamaCppLLM)
    assert isinstance(make_llm("Qwen/Qwen2.5-0.5B-Instruct"), TransformersLLM)
    server = make_llm({"type": "openai", "init_parameters": {"base_url": "http://127.0.0.1:8000/v1", "model": "qwen"}})
    assert isinstance(server, OpenAICompatibleLLM) and server.model == "qwen"
    with pytest.raises(ValueError, match="llm: unknown type 'vllm': use a registered short name"):
        make_llm({"type": "vllm"})
    with pytest.raises(ValueError, match=r"no longer read; write \{type: BACKEND, init_parameters"):
        make_llm({"backend": "openai", "model": "qwen"})
    with pytest.raises(ValueError, match="llm: unknown init parameter 'temperature' for LlamaCppLLM"):
        make_llm({"type": "llama.cpp", "init_parameters": {"model": "qwen2.5-0.5b", "temperature": 0.8}})
