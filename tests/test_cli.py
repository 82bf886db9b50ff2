"""The hopstack command: outputs, exit codes (0 ok, 2 bad input, 1 internal error) and files."""

import json
import os
import re
import sqlite3
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from haystack import Document
from haystack.dataclasses import GeneratedAnswer
from rich.console import Console

from conftest import YAML_DIR

BM25_YAML = YAML_DIR / "bm25.yaml"


def test_version(cli):
    from hopstack import __version__

    code, out, _ = cli("--version")
    assert code == 0 and out.strip() == f"hopstack {__version__}"


def test_installed_entry_point_runs(cli):
    result = subprocess.run([sys.executable, "-m", "hopstack", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout == cli("--version")[1]  # the fast path prints what typer does
    result = subprocess.run([sys.executable, "-m", "hopstack", "validate", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "validate" in result.stdout  # anything else reaches the command line


def test_validate_ok_and_bad(cli, write_yaml):
    code, out, err = cli("validate", *sorted(YAML_DIR.glob("*.yaml")))
    assert code == 0 and out.count("ok ") == len(list(YAML_DIR.glob("*.yaml"))) and err == ""
    bad = write_yaml("components:\n  x:\n    type: hopstack.components.retrieval.Nope\n")
    code, out, err = cli("validate", BM25_YAML, bad)
    assert code == 2
    assert f"{bad}:3:11: component 'x': unknown component type" in err
    assert "1 problem(s) in 1 file(s)" in err


def test_usage_error_exits_2(cli):
    code, _, err = cli("run")
    assert code == 2 and "Missing" in err


def test_run_one_question_prints_json(cli, sample_corpus):
    """Piped (here: captured), the result is one JSON line, as scripts read it."""
    code, out, _ = cli("run", BM25_YAML, "--index", sample_corpus, "--question", "Who founded Brannock Looms?")
    assert code == 0 and out.count("\n") == 1
    record = json.loads(out)
    docs = record["outputs"]["bm25"]["documents"]
    assert record["question"] == "Who founded Brannock Looms?"
    assert docs[0]["meta"]["title"] == "Brannock Looms" and set(docs[0]) == {"id", "content", "meta", "score"}


@pytest.fixture
def terminal(monkeypatch):
    """stdout as a terminal 100 columns wide, without colours."""
    monkeypatch.setattr("hopstack.cli.out", Console(force_terminal=True, color_system=None, width=100))


def test_run_on_a_terminal_shows_numbered_sources_and_json_when_asked(cli, sample_corpus, terminal):
    question = "Who founded Brannock Looms?"
    code, out, _ = cli("run", BM25_YAML, "--index", sample_corpus, "-q", question, "--sources", "2")
    assert code == 0 and out.startswith("1 · bm25 ─") and question in out
    lines = out.splitlines()
    assert lines[2] == "Documents"  # no reader: no answer line
    assert re.fullmatch(r" 1\. Brannock Looms  d01, score \d+\.\d{3}", lines[3]) and lines[4].startswith("    Brannock")
    assert "\n 2. " in out and "\n 3. " not in out and "… and 8 more (--sources N, or --json for all)" in out
    code, out, _ = cli("run", BM25_YAML, "--index", sample_corpus, "-q", question, "--json")
    assert code == 0 and json.loads(out)["outputs"]["bm25"]["documents"][0]["id"] == "d01"


def test_the_terminal_view_shows_the_answer_its_confidence_and_why_it_is_unsupported(capsys, terminal):
    from hopstack.cli import _print_answer

    sources = [Document(id="d02", content="Edda Varrow was born in Hollin Ford.", meta={"title": "Edda Varrow"})]
    answer = GeneratedAnswer(data="Quillmere", query="q", documents=sources, meta={"confidence": 0.94})
    _print_answer("q01", "hybrid-reader", "Where was Edda Varrow born?", {"reader": {"answers": [answer]}}, 5)
    out = capsys.readouterr().out.splitlines()
    assert out[2:5] == [
        "Answer: Quillmere   confidence 0.94",
        "unsupported: no source contains the answer",
        "Sources",
    ]
    assert out[5:7] == [" 1. Edda Varrow  d02", "    Edda Varrow was born in Hollin Ford."]


def test_run_questions_file_writes_one_line_each_with_traces(cli, sample_corpus, tmp_path):
    from hopstack.demo import SAMPLE_QUESTIONS

    out_file = tmp_path / "out.jsonl"
    code, _, err = cli(
        "run",
        BM25_YAML,
        "--index",
        sample_corpus,
        "--questions",
        SAMPLE_QUESTIONS,
        "-o",
        out_file,
        "--batch-size",
        "5",
        "--trace",
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(lines) == 66 and lines[0]["id"] == "q01" and lines[-1]["id"] == "q66"
    assert "bm25" in lines[0]["trace"]


def test_bad_questions_file_exits_2_naming_the_line(cli, sample_corpus, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"id": "a", "question": "ok?"}\n{"id": "b"}\n', encoding="utf-8")
    out_file = tmp_path / "out.jsonl"
    code, _, err = cli("run", BM25_YAML, "--index", sample_corpus, "--questions", questions, "-o", out_file)
    assert code == 2 and f"{questions}:2: 'question' must be a non-empty string" in err
    assert not out_file.exists()


def test_invalid_pipeline_runs_nothing(cli, write_yaml, tmp_path, sample_corpus):
    bad = write_yaml(
        """
        components:
          bm25:
            type: hopstack.components.retrieval.BM25Retriever
            init_parameters: {topk: 3}
        """
    )
    out_file = tmp_path / "out.jsonl"
    code, _, err = cli("run", bad, "--index", sample_corpus, "-q", "anything", "-o", out_file)
    assert code == 2 and "unknown init parameter 'topk'" in err and not out_file.exists()


def test_missing_index_exits_2(cli, monkeypatch):
    monkeypatch.delenv("HOPSTACK_INDEX", raising=False)
    code, _, err = cli("run", BM25_YAML, "-q", "anything")
    assert code == 2 and "no index given" in err


def test_draw_writes_mermaid_svg_and_png(cli, tmp_path):
    svg = tmp_path / "hybrid.svg"
    code, out, _ = cli("draw", YAML_DIR / "hybrid.yaml", "--out", svg)
    assert code == 0
    assert out.startswith("flowchart LR") and 'n_bm25 -- "documents → documents" --> n_fuse' in out
    assert ET.parse(svg).getroot().tag.endswith("svg")
    # the query, which both retrievers take, is one input of the pipeline: drawn once, with an edge to each
    assert out.count('(["query"])') == 1 and "in_n_query --> n_bm25" in out and "in_n_query --> n_dense" in out
    assert svg.read_text().count("<!-- input -->") == 1  # matplotlib's SVG keeps each text in a comment
    png = tmp_path / "hybrid.png"
    assert cli("draw", YAML_DIR / "hybrid.yaml", "-o", png)[0] == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mmd = tmp_path / "hybrid.mmd"
    assert cli("draw", YAML_DIR / "hybrid.yaml", "-o", mmd)[0] == 0 and mmd.read_text() == out
    code, _, err = cli("draw", YAML_DIR / "hybrid.yaml", "-o", tmp_path / "hybrid.gif")
    assert code == 2 and ".mmd, .svg or .png" in err


def test_cache_info_verify_and_clear(cli, tmp_path, monkeypatch):
    from hopstack.models.cache import CallCache

    monkeypatch.setenv("HOPSTACK_HOME", str(tmp_path))
    calls = CallCache(enabled=True)
    calls.put_many({"k1": [0.5], "k2": [0.25]})
    calls.close()
    code, out, _ = cli("cache", "info")
    assert code == 0 and "calls_v3: 2" in out
    db = sqlite3.connect(tmp_path / "cache" / "calls.sqlite")
    db.execute("UPDATE calls_v3 SET value = '[0.75]' WHERE key = 'k1'")
    db.commit()
    db.close()
    code, out, _ = cli("cache", "verify")
    assert code == 1 and "2 entries, 1 do not verify" in out
    code, out, _ = cli("cache", "verify", "--remove")
    assert code == 0 and "1 do not verify (removed)" in out
    assert CallCache(enabled=True).get_many(["k1", "k2"]) == {"k2": ([0.25], 0.0)}
    code, out, _ = cli("cache", "clear")
    assert code == 0 and not (tmp_path / "cache" / "calls.sqlite").exists()


def test_serve_bounds_the_call_cache_unless_told_otherwise(cli, monkeypatch, sample_corpus):
    import uvicorn

    import hopstack.serve

    limits = []
    monkeypatch.setattr(hopstack.serve, "create_app", lambda *args, **kwargs: None)
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: limits.append(os.environ["HOPSTACK_CACHE_MAX_MB"]))
    monkeypatch.setenv("HOPSTACK_CACHE_MAX_MB", "unset below")
    monkeypatch.delenv("HOPSTACK_CACHE_MAX_MB")
    serve = ("serve", YAML_DIR / "bm25.yaml", "--index", sample_corpus)
    assert cli(*serve)[0] == 0
    monkeypatch.setenv("HOPSTACK_CACHE_MAX_MB", "300")
    assert cli(*serve)[0] == 0
    assert cli(*serve, "--cache-max-mb", "64")[0] == 0
    assert limits == ["1024", "300", "64.0"]
