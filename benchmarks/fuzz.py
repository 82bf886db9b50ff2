"""Fuzzing what a user or a client controls, at scale (issue 20): mutants of the shipped pipeline files
(yaml/) through validation, loading and, for the BM25 ones, a run; mutants of the shipped grid files (demos/)
through reading and variant expansion; corpus mutants (five formats) through ``hopstack index`` and a BM25
search of what it built; questions-file mutants through the reader and a BM25 run; and malformed HTTP
requests (bodies, headers, methods, paths, framing) against a real ``hopstack serve`` of a BM25-only index
of the shipped sample.

Each case ends in one of:

- **clean refusal**: validation problems located in the file, a ``HopstackInputError`` that names the file,
  a 4xx, or a connection the server closed on a malformed request;
- **accepted**: the input is valid (the file loaded and ran, the corpus indexed, the request answered);
- **crash**: any other exception (also one validation reports as "cannot check this file", and an error
  that does not name its file), a 5xx, an error body that shows a server path or a traceback, a worker or
  server process that died;
- **hang**: no result within ``--case-timeout`` seconds of CPU time (or 6 times that in wall time; the worker
  process is killed and replaced), no response to a complete request within ``--case-timeout`` seconds, or
  a server that stops answering ``/healthz``.

In-process cases run in worker processes (``--jobs``) under that watchdog, with their memory capped at
``--memory-gb``. Mutants that try to run code (``!!python/object/apply:os.system``, ``type: os.system``,
``type: hopstack.__main__.main``, an unsafe OutputAdapter template, request bodies carrying pipelines) would
create a marker file; after every case the script checks that it does not exist ("code runs"). Every case is
drawn from its own ``random.Random(f"{seed}:{suite}:{number}")``, so a run is reproducible and one case can
be looked at again with ``--show SUITE:NUMBER``.

    python benchmarks/fuzz.py --json benchmarks/results/fuzz.json

Prints a table (cases, clean refusals, accepted, crashes, hangs and code runs per suite) and the crashes and
hangs with their inputs (all of them in the JSON), and exits 1 on any crash, hang or code run.
"""

import argparse
import functools
import http.client
import json
import multiprocessing
import os
import platform
import random
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import yaml
from results_file import write_results

from hopstack.demo import SAMPLE_CORPUS, SAMPLE_QUESTIONS
from hopstack.testing import (
    YAML_SNIPPETS,
    free_port,
    mutate_data,
    mutate_text,
    odd_value,
    stop_process,
    wait_ready,
)

REPO = Path(__file__).resolve().parent.parent
PIPELINE_FILES = sorted((REPO / "yaml").glob("*.yaml"))
GRID_FILES = sorted((REPO / "demos").glob("*.yaml"))
REFUSED, ACCEPTED, CRASH, HANG = "refused", "accepted", "crash", "hang"
SUITES = ("pipelines", "grids", "corpus", "questions", "http")
MODEL_FREE = {"hopstack.components.retrieval.BM25Retriever", "hopstack.components.expansion.BM25RM3Retriever"}
"""Component types that need no model: accepted pipeline mutants made only of these are also run."""
QUESTIONS = ["Who founded the Penhallow Ferry Company?", "In which town was the founder of Brannock Looms born?"]
INTERNAL_PROBLEMS = ("cannot check this file", "nested too deeply to check")
"""Validation problems that mean a check itself failed (validate's safety net): counted as crashes."""


def _types(data: Any) -> set[str]:
    """Every ``type`` named in ``data``, nested specs included."""
    if isinstance(data, dict):
        found = {data["type"]} if isinstance(data.get("type"), str) else set()
        return found.union(*(_types(value) for value in data.values()))
    if isinstance(data, list):
        return set().union(*(_types(value) for value in data))
    return set()


@functools.cache
def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _without_comments(text: str) -> str:
    return "".join(line for line in text.splitlines(keepends=True) if not line.lstrip().startswith("#"))


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000)


def _encode(text: str) -> bytes:
    """``text`` as file bytes; a lone surrogate becomes the bytes no UTF-8 reader accepts."""
    return text.encode("utf-8", "surrogatepass")


# -- cases ------------------------------------------------------------------------------------------------


def code_payloads(marker: Path) -> list[tuple[str, dict]]:
    """(type, init_parameters) that would create ``marker`` if a pipeline file could run code."""
    touch = f"touch {marker}"
    return [
        ("os.system", {"command": touch}),
        ("subprocess.Popen", {"args": ["touch", str(marker)]}),
        ("builtins.exec", {"source": f"open({str(marker)!r}, 'w')"}),
        ("builtins.eval", {"source": f"open({str(marker)!r}, 'w')"}),
        ("pathlib.Path.touch", {"self": str(marker)}),
        ("hopstack.__main__.main", {}),
        ("hopstack.cli.main", {}),
        ("hopstack.components.retrieval.os.system", {"command": touch}),
        (
            "haystack.components.converters.OutputAdapter",
            {
                "template": "{{ cycler.__init__.__globals__.os.system('" + touch + "') }}",
                "output_type": "str",
                "unsafe": True,
            },
        ),
    ]


def code_tags(marker: Path) -> list[str]:
    """YAML values that would create ``marker`` if a file were read with an unsafe loader."""
    return [
        f'!!python/object/apply:os.system ["touch {marker}"]',
        f'!!python/object/new:subprocess.Popen [["touch", "{marker}"]]',
        f"!!python/object/apply:builtins.exec [\"open('{marker}', 'w')\"]",
        "!!python/name:os.system",
        "!!python/module:os",
    ]


def pipeline_case(rng: random.Random, marker: Path, files: list[Path]) -> tuple[str, str, bytes]:
    """A mutant of one of ``files``: data-level changes, text-level changes, or an attempt to run code."""
    source = rng.choice(files)
    text = _without_comments(source.read_text(encoding="utf-8"))
    roll = rng.random()
    if roll < 0.03:  # a component, or a nested spec, of a type that would run code
        data = yaml.safe_load(text)
        type_name, parameters = rng.choice(code_payloads(marker))
        if "components" in data:  # a component, or a spec nested in one
            target = data["components"][rng.choice(list(data["components"]))]
            params = target.get("init_parameters") or {}
            nested = [value for value in params.values() if isinstance(value, dict) and "type" in value]
            if nested and rng.random() < 0.5:
                target = rng.choice(nested)
            target["type"], target["init_parameters"] = type_name, parameters
        else:  # a grid: a value swept for a parameter of a component of its first pipeline
            first = yaml.safe_load((source.parent / data["pipelines"][0]).read_text(encoding="utf-8"))
            key = f"{next(iter(first['components']))}.{rng.choice(['retriever', 'scorer', 'llm', 'top_k'])}"
            data["parameters"] = {
                **(data.get("parameters") or {}),
                key: [{"type": type_name, "init_parameters": parameters}],
            }
        return "code type", f"{source.name}: {type_name}", _encode(_dump(data))
    if roll < 0.06:  # a value that an unsafe YAML loader would turn into a call
        lines = text.splitlines(keepends=True)
        places = [i for i, line in enumerate(lines) if re.match(r"\s*[\w.-]+: \S", line)]
        tag = rng.choice(code_tags(marker))
        if places:
            i = rng.choice(places)
            lines[i] = lines[i].split(": ", 1)[0] + ": " + tag + "\n"
        else:
            lines.append(f"x: {tag}\n")
        return "code tag", f"{source.name}: {tag[:30]}", _encode("".join(lines))
    if roll < 0.55:
        data = yaml.safe_load(text)
        changes = rng.choice([1, 1, 2, 3])
        return "data", f"{source.name}: {changes} change(s)", _encode(_dump(mutate_data(data, rng, changes)))
    changes = rng.choice([1, 1, 2])
    for _ in range(changes):
        text = mutate_text(text, rng, YAML_SNIPPETS)
    return "text", f"{source.name}: {changes} change(s)", _encode(text)


def _corpus_layout(records: list[dict], rng: random.Random) -> tuple[str, dict[str, Any], str]:
    """The sample's ``records`` in one of the corpus formats: (format, {file: data or text}, source)."""
    form = rng.choice(["jsonl", "beir", "multihop-rag", "hotpotqa", "folder"])
    if form == "jsonl":
        return form, {"corpus.jsonl": records}, "corpus.jsonl"
    if form == "beir":
        beir = [
            {"_id": r["id"], "title": r["title"], "text": r["text"], "metadata": {"n": i}}
            for i, r in enumerate(records)
        ]
        return form, {"corpus.jsonl": beir}, "corpus.jsonl"
    if form == "multihop-rag":
        articles = [{"title": r["title"], "body": r["text"], "url": f"https://x.example/{r['id']}"} for r in records]
        return form, {"corpus.json": articles}, "corpus.json"
    if form == "hotpotqa":
        context = [[r["title"], [s + "." for s in r["text"].split(". ")]] for r in records]
        return form, {"questions.json": [{"_id": "q", "question": "?", "context": context}]}, "questions.json"
    files = {f"docs/{r['id']}.{rng.choice(['txt', 'md'])}": f"# {r['title']}\n\n{r['text']}\n" for r in records}
    return form, files, "docs"


def _serialise(name: str, data: Any) -> str:
    if isinstance(data, str):
        return data
    if name.endswith(".jsonl") and isinstance(data, list):
        return "".join(json.dumps(r, ensure_ascii=_needs_ascii(r)) + "\n" for r in data)
    return json.dumps(data)


def _needs_ascii(record: Any) -> bool:
    """JSON lines keep their non-ASCII text as UTF-8, except where a lone surrogate needs its escape."""
    try:
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _byte_damage(content: bytes, rng: random.Random) -> bytes:
    """``content`` cut, with bytes that are not UTF-8, a byte-order mark, NULs, or nesting 100,000 deep."""
    choice = rng.randrange(6)
    if choice == 0:
        return content[: rng.randrange(len(content) + 1)]
    if choice == 1:
        at = rng.randrange(len(content) + 1)
        return content[:at] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xfe\xff"]) + content[at:]
    if choice == 2:
        return b"\xef\xbb\xbf" + content
    if choice == 3:
        return b"[" * 100_000 + b"]" * 100_000 + b"\n" + content
    if choice == 4:
        return content + b'{"id": "deep", "text": "t", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    return b""


def corpus_case(rng: random.Random, records: list[dict]) -> tuple[str, str, tuple[dict[str, bytes], str]]:
    """A corpus mutant: a few sample documents in one format, changed as data, as text or as bytes."""
    start = rng.randrange(len(records) - 12)
    chosen = [dict(r) for r in records[start : start + rng.randint(1, 12)]]
    form, files, source = _corpus_layout(chosen, rng)
    name = rng.choice(list(files))
    roll = rng.random()
    if roll < 0.45 and not isinstance(files[name], str):
        files[name] = mutate_data(files[name], rng, rng.choice([1, 1, 2, 3]))
        kind = "data"
    elif roll < 0.75:
        files[name] = mutate_text(_serialise(name, files[name]), rng)
        kind = "text"
    else:
        kind = "bytes"
    encoded = {n: _encode(_serialise(n, content)) for n, content in files.items()}
    detail = form
    if kind == "bytes":
        encoded[name] = _byte_damage(encoded[name], rng)
    if form == "folder" and rng.random() < 0.2:  # odd entries in a folder corpus
        odd = rng.choice(
            ["docs/empty.txt", "docs/sub/deep/x.md", "docs/.hidden.txt", "docs/a b\u00e9.txt", "docs/x.TXT"]
        )
        encoded[odd] = rng.choice([b"", b"\xff\xfe", b"# only a title\n", _encode(str(odd_value(rng)))])
        detail += f", odd file {odd}"
    return kind, detail, (encoded, source)


def questions_case(rng: random.Random, records: list[dict]) -> tuple[str, str, tuple[bytes, bool]]:
    """A questions-file mutant: a few sample questions changed as data, as text or as bytes; with or
    without the corpus to check gold ids against."""
    start = rng.randrange(len(records) - 10)
    chosen = [dict(r) for r in records[start : start + rng.randint(1, 10)]]
    roll = rng.random()
    if roll < 0.15:  # a pipeline input with an odd value
        rng.choice(chosen)[rng.choice(["top_k", "query", "filters"])] = odd_value(rng)
        kind = "input value"
        content = _encode(_serialise("q.jsonl", chosen))
    elif roll < 0.6:
        kind = "data"
        content = _encode(_serialise("q.jsonl", mutate_data(chosen, rng, rng.choice([1, 1, 2, 3]))))
    elif roll < 0.85:
        kind = "text"
        content = _encode(mutate_text(_serialise("q.jsonl", chosen), rng))
    else:
        kind = "bytes"
        content = _byte_damage(_encode(_serialise("q.jsonl", chosen)), rng)
    with_corpus = rng.random() < 0.5
    return kind, "gold ids checked" if with_corpus else "", (content, with_corpus)


def _request(method: str, path: str, headers: list[tuple[str, str]], body: bytes = b"", version: str = "HTTP/1.1"):
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n"
    return _encode(head) + body


def _json_request(path: str, body: bytes, content_type: str = "application/json") -> bytes:
    headers = [("Host", "127.0.0.1"), ("Content-Type", content_type), ("Content-Length", str(len(body)))]
    return _request("POST", path, headers, body)


# fmt: off
ROUTES = ["/v1/answer", "/v1/retrieve", "/v1/pipelines", "/v1/pipelines/bm25/graph.svg", "/healthz", "/readyz",
          "/metrics", "/", "/docs", "/openapi.json", "/page/app.js", "/page/index.html"]
ODD_PATHS = [
    "//healthz", "/healthz?" + "a=1&" * 2000, "/%00", "/%ff%fe", "/..%2f..%2fetc/passwd", "/page/..%2fapp.py",
    "/page/%2e%2e/%2e%2e/cli.py", "/page/../../../../etc/passwd", "*", "http://evil.example/healthz", "",
    "/" + "a" * 10_000, "/" + "a" * 70_000, "/v1/answer#fragment", "/v1/answer;p=1", "/v1/pipelines/%2e%2e",
    "/v1/pipelines/" + "x" * 5000 + "/graph.svg", "/v1/pipelines/..%2f..%2fyaml%2fbm25/graph.svg", "/\u00e9",
    "/page/", "/page", "/page/app.js?v=" + "%" * 30,
]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "CONNECT", "PROPFIND", "get",
           "G\x00T", "A" * 1000, ""]
CONTENT_TYPES = ["application/json", "text/plain", "application/x-www-form-urlencoded", "",
                 "multipart/form-data; boundary=x", "application/json; charset=utf-16"]
ODD_BODIES = [
    b"", b"null", b"[]", b"{}", b'{"question": NaN}', b'{"question": "q", "top_k": Infinity}', b"[" * 100_000,
    b'{"question": "' + b"q" * 5000 + b'"}', b'{"question": "\xff\xfe"}', b'{"question": "\\ud800"}',
    b'{"question": "q", "question": "r"}', b"\xef\xbb\xbf" + b'{"question": "q"}', b"x" * 70_000,
    b'{"question": 1' + b"0" * 5000 + b"}", b'{"question": "q", "top_k": 1' + b"0" * 400 + b"}",
    b'{"question": "q"} trailing', b'{"question": {"$gt": ""}}', b'{"question": "q", "pipeline": "../yaml/bm25"}',
]
ODD_HEADERS = {
    "Host": ["", "a", "evil.example", "127.0.0.1:99999", "[::1", "\u00e9.example"],
    "Range": ["bytes=0-0", "bytes=-1", "bytes=999999-", "bytes=0-1,2-3,4-5", "bytes=5-1", "bytes=", "lines=1-2",
              "bytes=0-" + "9" * 40, "bytes=" + "0-1," * 500],
    "If-Modified-Since": ["garbage", "Mon, 99 Foo 9999 99:99:99 GMT", ""],
    "If-None-Match": ['"x"', "*", "W/", ""],
    "Authorization": ["Bearer ", "Bearer " + "k" * 10_000, "Basic !!!", "\u00e9"],
    "Connection": ["Upgrade", "close", "keep-alive, x", ""],
    "Upgrade": ["websocket", "h2c", "x" * 100],
    "Accept-Encoding": ["gzip", "br", "x" * 100, "identity;q=0, *;q=0"],
    "Expect": ["100-continue", "x"],
    "Transfer-Encoding": ["gzip", "identity", "chunked, x"],
    "Content-Encoding": ["gzip", "x"],
    "Origin": ["null", "https://evil.example"],
    "X-API-Key": ["", "k" * 5000],
    "Cookie": ["a=" + "b" * 3000, "=;=;"],
    "X-Forwarded-For": ["1.2.3.4, evil", "\u00e9"],
}
MALFORMED_HEADER_LINES = ["NoColon", " X-Space: 1", "X-Space : 1", "X-Fold: a\r\n  folded", "X-Nul: a\x00b",
                          "X-Cr: a\rb", "X\u00e9: 1", "X-Utf8: \u00e9\u6f22", ": empty", "X-Bad[]: 1"]
# label, head before the body (with {n}: the body's length), body after it; incomplete by construction
FRAMINGS = [
    ("version HTTP/1.0", "GET /healthz HTTP/1.0\r\n\r\n", False),
    ("version HTTP/2.0", "GET /healthz HTTP/2.0\r\nHost: h\r\n\r\n", False),
    ("version HTTP/0.9", "GET /healthz HTTP/0.9\r\n\r\n", False),
    ("version HTTP/9.9", "GET /healthz HTTP/9.9\r\nHost: h\r\n\r\n", False),
    ("version HTTPS/1.1", "GET /healthz HTTPS/1.1\r\nHost: h\r\n\r\n", False),
    ("no version", "GET /healthz\r\nHost: h\r\n\r\n", False),
    ("method only", "GET\r\n\r\n", False),
    ("extra spaces", "GET  /healthz  HTTP/1.1\r\nHost: h\r\n\r\n", False),
    ("leading blank line", "\r\nGET /healthz HTTP/1.1\r\nHost: h\r\n\r\n", False),
    ("TLS hello", "\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", False),
    ("HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False),
    ("bare LF", "POST {route} HTTP/1.1\nHost: h\nContent-Type: application/json\nContent-Length: {n}\n\n{body}", False),
    ("Content-Length -1", "POST {route} HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", False),
    ("Content-Length abc", "POST {route} HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n", False),
    ("Content-Length huge", "POST {route} HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", False),
    ("Content-Length twice", "POST {route} HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\nContent-Length: 1\r\n\r\n",
     False),
    ("Content-Length and chunked",
     "POST {route} HTTP/1.1\r\nHost: h\r\nContent-Length: {n}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked}",
     False),
    ("chunked", "POST {route} HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
     "\r\n\r\n{chunked}", False),
    ("bad chunk size", "POST {route} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n",
     False),
    ("huge chunk size", "POST {route} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
     "ffffffffffffffffff\r\nx\r\n0\r\n\r\n", True),  # the rest of the chunk never comes
    ("chunked, gzip", "POST {route} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n{chunked}", False),
    ("pipelined", "POST {route} HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {n}"
     "\r\n\r\n{body}GET /healthz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", False),
    ("bytes after the body",
     "POST {route} HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: {n}\r\n\r\n{body}GARBAGE",
     False),
    ("body shorter than Content-Length",
     "POST {route} HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 9{n}\r\n\r\n{body}", True),
    ("head never ends", "GET /healthz HTTP/1.1\r\nHost: h\r\nX-A: b", True),
    ("chunked, never ends", "POST {route} HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", True),
]
# fmt: on


def http_case(rng: random.Random, marker: Path) -> tuple[str, str, tuple[bytes, bool]]:
    """A request as raw bytes, and whether it is incomplete by construction (the server rightly waits for
    the rest): a mutated or odd JSON body, an odd method or path, odd or malformed headers, or odd framing."""
    valid = {"question": rng.choice(QUESTIONS), "pipeline": "bm25", "top_k": 3, "return": ["documents", "answer"]}
    route = rng.choice(["/v1/answer", "/v1/retrieve"])
    body = json.dumps(valid).encode()
    roll = rng.random()
    if roll < 0.25:
        return (
            "body",
            f"data change, {route}",
            (_json_request(route, _encode(json.dumps(mutate_data(valid, rng)))), False),
        )
    if roll < 0.33:
        return (
            "body",
            f"text change, {route}",
            (_json_request(route, _encode(mutate_text(json.dumps(valid), rng))), False),
        )
    if roll < 0.4:
        content_type = rng.choice(CONTENT_TYPES)
        return (
            "body",
            f"odd body, {content_type!r}",
            (_json_request(route, rng.choice(ODD_BODIES), content_type), False),
        )
    if roll < 0.43:  # a client sending a pipeline, a YAML payload, a module or a path
        carried = rng.choice([
            {"components": {"x": {"type": "os.system", "init_parameters": {"command": f"touch {marker}"}}}},
            {"pipeline": f'!!python/object/apply:os.system ["touch {marker}"]'},
            {"pipeline": "hopstack.__main__"},
            {"index": "/etc"},
        ])  # fmt: skip
        return "body", "carried pipeline", (_json_request(route, _encode(json.dumps({**valid, **carried}))), False)
    host = [("Host", "127.0.0.1")]
    if roll < 0.6:
        method = rng.choice(METHODS)
        path = rng.choice(ROUTES + ODD_PATHS) if rng.random() < 0.7 else "/v1/pipelines/" + quote(str(odd_value(rng)))
        sent = body if rng.random() < 0.3 else b""
        headers = host + ([("Content-Length", str(len(sent)))] if sent else [])
        return "method and path", f"{method[:10]!r} {path[:30]!r}", (_request(method, path, headers, sent), False)
    if roll < 0.8:
        method, path = rng.choice([("POST", route), ("GET", rng.choice(ROUTES))])
        sent = body if method == "POST" else b""
        headers = host + [("Content-Type", "application/json"), ("Content-Length", str(len(sent)))]
        choice = rng.random()
        if choice < 0.15:
            count = rng.choice([98, 99, 100, 150, 1000])
            headers += [(f"X-{i}", "1") for i in range(count)]
            detail = f"{count} more"
        elif choice < 0.3:
            size = rng.choice([16_000, 16_400, 60_000, 1 << 20, 8 << 20])
            headers.append(("X-Big", "v" * size))
            detail = f"one of {size:,} bytes"
        elif choice < 0.4:
            line = rng.choice(MALFORMED_HEADER_LINES)
            head = _request(method, path, headers).removesuffix(b"\r\n") + _encode(line) + b"\r\n\r\n"
            return "headers", f"malformed line {line[:12]!r}", (head + sent, False)
        else:
            names = rng.sample(list(ODD_HEADERS), rng.randint(1, 3))
            headers += [(name, rng.choice(ODD_HEADERS[name])) for name in names]
            detail = ", ".join(names)
        return "headers", detail, (_request(method, path, headers, sent), False)
    label, template, incomplete = rng.choice(FRAMINGS)
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    raw = _encode(template.replace("{route}", route).replace("{n}", str(len(body))))
    raw = raw.replace(b"{body}", body).replace(b"{chunked}", chunked)
    return "framing", label, (raw, incomplete)


def make_case(suite: str, number: int, seed: int, marker: Path) -> tuple[str, str, Any]:
    """Case ``number`` of ``suite``: (kind of mutation, its detail, the input), the same for the same seed."""
    rng = random.Random(f"{seed}:{suite}:{number}")
    if suite in ("pipelines", "grids"):
        return pipeline_case(rng, marker, PIPELINE_FILES if suite == "pipelines" else GRID_FILES)
    if suite == "corpus":
        return corpus_case(rng, _records(SAMPLE_CORPUS))
    if suite == "questions":
        return questions_case(rng, _records(SAMPLE_QUESTIONS))
    return http_case(rng, marker)


# -- in-process checks (worker processes) -----------------------------------------------------------------


class Checker:
    """Runs one in-process case and classifies it; lives in a worker process."""

    def __init__(self, work: Path):
        from hopstack.graphs import BatchRunner
        from hopstack.spec.loading import load_pipeline

        self.work = work
        self.runner = BatchRunner(load_pipeline(REPO / "yaml" / "bm25.yaml", {"index": str(SAMPLE_CORPUS)}))
        self.runner.warm_up()
        from hopstack.index.chunking import SentenceChunker
        from hopstack.index.formats import SourceDocument

        SentenceChunker().split(SourceDocument("warm", "", "The tokenizer loads once."))  # so that no case pays

    def check(self, suite: str, number: int, payload: Any) -> tuple[str, str]:
        folder = self.work / suite / str(number)
        folder.mkdir(parents=True)
        try:
            return getattr(self, suite)(folder, payload)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    @staticmethod
    def named(exc: Exception, path: Path) -> tuple[str, str]:
        """A refusal when the error names the file (or a file inside the folder), else a crash."""
        message = str(exc)
        if str(path) in message:
            return REFUSED, message
        return CRASH, f"the error does not name {path.name}: {type(exc).__name__}: {message}"

    def _run(self, runner: Any, inputs: list[dict], ids: list[str]) -> tuple[str, str]:
        """Run ``inputs`` and turn the outputs into JSON lines as ``hopstack run`` does."""
        from hopstack.errors import HopstackInputError, PipelineRunError
        from hopstack.graphs.tracing import jsonable

        try:
            result = runner.run(inputs, item_ids=ids)
        except HopstackInputError as exc:
            return REFUSED, f"refused at run time: {exc}"
        except PipelineRunError as exc:
            return CRASH, f"accepted, then the run failed: {exc}"
        for outputs in result.outputs:
            json.dumps({"outputs": jsonable(outputs)}, ensure_ascii=False).encode("utf-8")
        return ACCEPTED, ""

    def pipelines(self, folder: Path, content: bytes) -> tuple[str, str]:
        from haystack import Pipeline

        from hopstack.core.spec import apply_overrides
        from hopstack.errors import HopstackInputError
        from hopstack.graphs import BatchRunner
        from hopstack.spec.validate import validate_file

        path = folder / "pipeline.yaml"
        path.write_bytes(content)
        data, problems = validate_file(path)
        if problems:
            for problem in problems:
                if problem.source != str(path) or problem.line < 1 or problem.message.startswith(INTERNAL_PROBLEMS):
                    return CRASH, str(problem)
            return REFUSED, str(problems[0])
        try:
            pipeline = Pipeline.from_dict(
                apply_overrides(data, {"index": str(SAMPLE_CORPUS)}), allowed_modules=["hopstack"]
            )
        except HopstackInputError as exc:
            return REFUSED, f"refused on loading: {exc}"
        except Exception as exc:  # noqa: BLE001 - what the fuzz looks for
            return CRASH, f"validated, then loading failed: {type(exc).__name__}: {exc}"
        if not _types(data["components"]) <= MODEL_FREE:
            return ACCEPTED, ""
        runner = BatchRunner(pipeline)
        try:
            runner.warm_up()
        except HopstackInputError as exc:
            return REFUSED, f"refused on warming up: {exc}"
        return self._run(runner, [runner.question_input(q) for q in QUESTIONS], ["q1", "q2"])

    def grids(self, folder: Path, content: bytes) -> tuple[str, str]:
        from hopstack.errors import HopstackInputError
        from hopstack.experiments.variants import expand_variants, read_grid

        (folder / "yaml").symlink_to(REPO / "yaml")
        (folder / "demos").mkdir()
        path = folder / "demos" / "grid.yaml"
        path.write_bytes(content)
        try:
            variants = expand_variants([], read_grid(path), {"index": str(SAMPLE_CORPUS)})
        except HopstackInputError as exc:
            return self.named(exc, path)
        errors = [v.error for v in variants if v.error]
        return (REFUSED, errors[0]) if errors else (ACCEPTED, "")

    def corpus(self, folder: Path, payload: tuple[dict[str, bytes], str]) -> tuple[str, str]:
        from hopstack.errors import HopstackInputError
        from hopstack.graphs import BatchRunner
        from hopstack.index.store import build_index
        from hopstack.spec.loading import load_pipeline

        files, source = payload
        for name, content in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(content)
        try:
            build_index(folder / source, folder / "index", dense=None)
        except HopstackInputError as exc:
            return self.named(exc, folder / source)
        runner = BatchRunner(load_pipeline(REPO / "yaml" / "bm25.yaml", {"index": str(folder / "index")}))
        runner.warm_up()
        return self._run(runner, [runner.question_input(q) for q in QUESTIONS], ["q1", "q2"])

    def questions(self, folder: Path, payload: tuple[bytes, bool]) -> tuple[str, str]:
        from hopstack.datasets.questions import read_questions
        from hopstack.errors import HopstackInputError

        content, with_corpus = payload
        path = folder / "questions.jsonl"
        path.write_bytes(content)
        try:
            items = read_questions(path, SAMPLE_CORPUS if with_corpus else None)
        except HopstackInputError as exc:
            return self.named(exc, path)
        inputs = [self.runner.question_input(q.question, q.extra) for q in items]
        return self._run(self.runner, inputs, [q.id for q in items])


def worker_main(connection: Connection, work: str, memory_bytes: int) -> None:
    """Answer cases sent over ``connection`` until it sends None."""
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    checker = Checker(Path(work))
    connection.send("ready")
    while (case := connection.recv()) is not None:
        try:
            outcome = checker.check(*case)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: a file must not end the process
            outcome = (CRASH, f"{type(exc).__name__}: {str(exc)[:2000]}")
        connection.send(outcome)


class Worker:
    """A worker process with at most one case in flight; killed and replaced when a case hangs."""

    def __init__(self, context: Any, work: Path, memory_bytes: int):
        self.context, self.work, self.memory_bytes = context, work, memory_bytes
        self.case: tuple | None = None
        self.started = 0.0
        self.start()

    def start(self) -> None:
        self.connection, child = self.context.Pipe()
        self.process = self.context.Process(target=worker_main, args=(child, str(self.work), self.memory_bytes))
        self.process.start()
        child.close()
        if not self.connection.poll(300) or self.connection.recv() != "ready":
            raise RuntimeError("a fuzz worker did not start")

    def send(self, case: tuple) -> None:
        self.case, self.started, self.cpu_started = case, time.perf_counter(), self.cpu_seconds()
        self.connection.send(case[:3])

    def cpu_seconds(self) -> float:
        """The CPU time the process has used (Linux's /proc): a case's share of it is what the machine's
        other load does not inflate."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def overdue(self, limit: float) -> bool:
        """Whether the case in flight has used more than ``limit`` CPU seconds, or 6 times that in wall time."""
        try:
            cpu = self.cpu_seconds() - self.cpu_started
        except OSError:  # the process is gone: its connection says so
            return False
        return cpu > limit or time.perf_counter() - self.started > 6 * limit

    def stop(self) -> None:
        """End the process: asked to when it is idle, killed when it is stuck in a case."""
        if self.case is None:
            self.connection.send(None)
            self.process.join(timeout=30)
        self.process.kill()
        self.process.join()
        self.connection.close()


def run_in_process(counts: dict[str, int], args: argparse.Namespace, work: Path, marker: Path) -> list[dict]:
    """Every case of the in-process suites through ``--jobs`` workers under the watchdog."""
    context = multiprocessing.get_context("spawn")
    memory = int(args.memory_gb * 2**30)
    workers = [Worker(context, work, memory) for _ in range(args.jobs)]
    cases = ((suite, number) for suite, count in counts.items() for number in range(count))
    results: list[dict] = []

    def record(worker: Worker, outcome: str, detail: str) -> None:
        results.append(_result(*worker.case, outcome, detail, worker.started, marker))
        worker.case = None

    try:
        while True:
            for worker in workers:
                if worker.case is None and (case := next(cases, None)) is not None:
                    kind, mutation, payload = make_case(*case, args.seed, marker)
                    worker.send((*case, payload, kind, mutation))
            busy = [w for w in workers if w.case is not None]
            if not busy:
                return results
            wait([w.connection for w in busy], timeout=1.0)
            for worker in busy:
                if worker.connection.poll():
                    try:
                        record(worker, *worker.connection.recv())
                    except EOFError:
                        worker.stop()
                        record(worker, CRASH, f"the worker died (exit code {worker.process.exitcode})")
                        worker.start()
                elif worker.overdue(args.case_timeout):
                    worker.stop()
                    record(worker, HANG, f"no result within {args.case_timeout:g} CPU seconds")
                    worker.start()
    finally:
        for worker in workers:
            worker.stop()


def _result(
    suite: str, number: int, payload: Any, kind: str, mutation: str, outcome: str, detail: str, started: float,
    marker: Path,
) -> dict:  # fmt: skip
    """One case's row; the marker file, if a case created it, is removed so that the next case is checked too."""
    ran_code = marker.exists()
    if ran_code:
        marker.unlink(missing_ok=True)  # (the HTTP thread checks it too)
    seconds = round(time.perf_counter() - started, 3)
    row = {"suite": suite, "case": number, "kind": kind, "mutation": mutation, "outcome": outcome,
           "code_ran": ran_code, "seconds": seconds, "detail": detail[:1000]}  # fmt: skip
    if outcome in (CRASH, HANG) or ran_code:
        row["input"] = _shown(payload)
    return row


def _shown(payload: Any) -> Any:
    """A case's input for the report, long contents shortened."""
    if isinstance(payload, bytes):
        text = payload.decode("utf-8", "backslashreplace")
        return text if len(text) <= 3000 else text[:3000] + f"... ({len(text):,} characters)"
    if isinstance(payload, (tuple, list)):
        return [_shown(p) for p in payload]
    if isinstance(payload, dict):
        return {k: _shown(v) for k, v in payload.items()}
    return payload


# -- HTTP cases (against a real server) -------------------------------------------------------------------


def exchange(port: int, raw: bytes, timeout: float) -> tuple[int | None, bytes]:
    """Send ``raw`` on a new connection and read one response: (status, body), or (None, b"") when the server
    closed the connection without a response. Raises TimeoutError when nothing comes within ``timeout``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        try:
            connection.sendall(raw)
        except OSError:  # the server refused the request before reading all of it
            pass
        method = raw.split(b" ", 1)[0].decode("latin-1")
        response = http.client.HTTPResponse(connection, method=method)
        try:
            response.begin()
            return response.status, response.read()
        except TimeoutError:
            raise
        except (http.client.HTTPException, OSError):  # closed, reset, or no HTTP response
            return None, b""


class Server:
    """``hopstack serve`` of yaml/bm25.yaml over a BM25-only index of the sample, restarted if it dies."""

    def __init__(self, work: Path):
        self.work = work
        self.env = {**os.environ, "HOPSTACK_HOME": str(work / "home"), "HOPSTACK_CACHE": "off"}
        index = work / "index"
        command = [sys.executable, "-m", "hopstack", "index", str(SAMPLE_CORPUS), "--out", str(index), "--no-dense"]
        subprocess.run(command, cwd=REPO, env=self.env, check=True, capture_output=True)
        self.index = index
        self.start()

    def start(self) -> None:
        self.port = free_port()
        pipeline = str(REPO / "yaml" / "bm25.yaml")
        command = [
            sys.executable,
            "-m",
            "hopstack",
            "serve",
            pipeline,
            "--index",
            str(self.index),
            "--port",
            str(self.port),
        ]
        with (self.work / "server.log").open("ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=log, stderr=log)
        wait_ready(httpx.Client(base_url=f"http://127.0.0.1:{self.port}"), seconds=300)

    def restart(self) -> None:
        stop_process(self.process, timeout_s=10)
        self.start()

    def stop(self) -> None:
        stop_process(self.process, timeout_s=30)


LEAKS = (str(REPO), "Traceback", "site-packages")


def check_http(server: Server, kind: str, raw: bytes, incomplete: bool, timeout: float, work: Path) -> tuple[str, str]:
    """Send one request and classify what came back, then check that the server still answers."""
    outcome, detail = ACCEPTED, ""
    try:
        status, body = exchange(server.port, raw, 1.0 if incomplete else timeout)
    except TimeoutError:
        status, body = None, b""
        if not incomplete:
            outcome, detail = HANG, f"no response within {timeout:g} s"
    text = body.decode("utf-8", "replace")
    if outcome != HANG:
        if status is None and kind == "body":
            outcome, detail = CRASH, "closed without a response to a well-formed request"
        elif status is None:
            outcome, detail = REFUSED, "closed without a response" if not incomplete else "waits for the rest"
        elif status >= 500:
            outcome, detail = CRASH, f"{status}: {text[:300]}"
        elif status >= 400:
            outcome, detail = REFUSED, f"{status}: {text[:300]}"
        else:
            detail = str(status)
        leaked = [leak for leak in (*LEAKS, str(work)) if leak in text and leak.encode() not in raw]  # not echoes
        if (leaked and status != 200) or b"def create_app" in body or b"root:x:0:0" in body:
            outcome, detail = CRASH, f"{status} shows {leaked or 'a server file'}: {text[:300]}"
    if server.process.poll() is not None:
        outcome, detail = CRASH, f"the server died (exit code {server.process.returncode})"
        server.restart()
        return outcome, detail
    try:
        health, _ = exchange(
            server.port, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", timeout
        )
    except TimeoutError:
        health = None
    if health != 200:
        outcome, detail = HANG, f"/healthz answered {health} after this request"
        server.restart()
    return outcome, detail


def run_http(count: int, args: argparse.Namespace, work: Path, marker: Path) -> list[dict]:
    """Every HTTP case against one server (restarted if it dies or stops answering)."""
    if not count:
        return []
    server = Server(work)
    results = []
    try:
        for number in range(count):
            kind, mutation, (raw, incomplete) = make_case("http", number, args.seed, marker)
            started = time.perf_counter()
            outcome, detail = check_http(server, kind, raw, incomplete, args.case_timeout, work)
            results.append(_result("http", number, raw, kind, mutation, outcome, detail, started, marker))
    finally:
        server.stop()
    return results


# -- report -----------------------------------------------------------------------------------------------


def summarise(results: list[dict], suite: str) -> dict:
    """Outcome counts of one suite (``total``: of all), and the seconds its cases took."""
    mine = [r for r in results if suite in (r["suite"], "total")]
    counts = {kind: sum(r["outcome"] == kind for r in mine) for kind in (REFUSED, ACCEPTED, CRASH, HANG)}
    return {"suite": suite, "cases": len(mine), **counts, "code_runs": sum(r["code_ran"] for r in mine),
            "case_seconds": round(sum(r["seconds"] for r in mine), 1)}  # fmt: skip


def by_kind(results: list[dict]) -> dict[str, dict[str, int]]:
    """Outcomes per suite and kind of mutation."""
    counts: dict[str, dict[str, int]] = {}
    for row in results:
        outcomes = counts.setdefault(f"{row['suite']}: {row['kind']}", {})
        outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--yaml", type=int, default=10_000, help="pipeline and grid file mutants (split by file count)")
    parser.add_argument("--corpus", type=int, default=1000, help="corpus mutants")
    parser.add_argument("--questions", type=int, default=1000, help="questions-file mutants")
    parser.add_argument("--http", type=int, default=1000, help="HTTP cases")
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--case-timeout", type=float, default=10.0, help="(CPU) seconds before a case is a hang")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes for the in-process suites")
    parser.add_argument("--memory-gb", type=float, default=4.0, help="memory cap of each worker process")
    parser.add_argument("--show", metavar="SUITE:NUMBER", help="print one case's input and exit")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.show:  # the marker path in a case is the run's own; shown here as WORK
        suite, number = args.show.split(":")
        kind, mutation, payload = make_case(suite, int(number), args.seed, Path("WORK/code-ran"))
        print(f"{kind}: {mutation}\n{json.dumps(_shown(payload), indent=2, ensure_ascii=False)}")
        return
    work = Path(tempfile.mkdtemp(prefix="hopstack-fuzz-"))
    os.environ.update(HOPSTACK_CACHE="off", HOPSTACK_HOME=str(work / "home"))
    marker = work / "code-ran"
    share = round(args.yaml * len(PIPELINE_FILES) / (len(PIPELINE_FILES) + len(GRID_FILES)))
    counts = {"pipelines": share, "grids": args.yaml - share, "corpus": args.corpus, "questions": args.questions}
    started = time.perf_counter()
    try:  # the HTTP cases (a client here, the server in its own process) run beside the workers
        with ThreadPoolExecutor(max_workers=1) as thread:
            http_results = thread.submit(run_http, args.http, args, work, marker)
            results = run_in_process(counts, args, work, marker)
            results += http_results.result()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.perf_counter() - started
    rows = [summarise(results, suite) for suite in (*SUITES, "total")]
    print(
        f"{'suite':10} {'cases':>7} {'clean refusals':>14} {'accepted':>8} {'crashes':>7} {'hangs':>5} {'code runs':>9}"
    )
    for row in rows:
        print(f"{row['suite']:10} {row['cases']:7,} {row[REFUSED]:14,} {row[ACCEPTED]:8,} {row[CRASH]:7,} "
              f"{row[HANG]:5,} {row['code_runs']:9,}")  # fmt: skip
    print(f"{seconds:.0f} s, {args.jobs} worker process(es)")
    failures = [r for r in results if r["outcome"] in (CRASH, HANG) or r["code_ran"]]
    for row in failures[:20]:
        print(
            f"\n{row['suite']}:{row['case']} {row['outcome']} ({row['kind']}: {row['mutation']}): {row['detail'][:500]}"
        )
    if len(failures) > 20:
        print(f"\n... {len(failures) - 20} more in the JSON")
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report = {"benchmark": "fuzz", "machine": machine, "settings": settings, "seconds": round(seconds, 1)}
    write_results(args.json, {**report, "rows": rows, "by_kind": by_kind(results), "failures": failures})
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
