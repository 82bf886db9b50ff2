import os
import sys
import textwrap
from pathlib import Path

import pytest

from hopstack.datasets.questions import read_questions
from hopstack.demo import SAMPLE_CORPUS, SAMPLE_QUESTIONS

# Tests must not read or fill the user's call cache; the cache's own tests switch it on explicitly.
os.environ["HOPSTACK_CACHE"] = "off"

REPO = Path(__file__).resolve().parent.parent
YAML_DIR = REPO / "yaml"
SHARED_DATA = REPO.parent / "shared" / "data"


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
