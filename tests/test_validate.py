"""Every validation problem names the file, line, column, component and socket; nothing runs after one."""

import sys
from pathlib import Path

import pytest

from hopstack.spec.loading import load_pipeline
from hopstack.spec.validate import PipelineValidationError, validate_file, validate_text

BM25 = "hopstack.components.retrieval.BM25Retriever"
RANKER = "haystack.components.rankers.meta_field.MetaFieldRanker"


def problems_of(path):
    _, problems = validate_file(path)
    return problems


def test_shipped_pipelines_are_valid():
    from conftest import YAML_DIR

    files = sorted(YAML_DIR.glob("*.yaml"))
    assert files
    for path in files:
        assert problems_of(path) == [], path


def test_yaml_syntax_error_has_line_and_column(write_yaml):
    path = write_yaml(
        """
        components:
          bm25:
            type: hopstack.components.retrieval.BM25Retriever
            init_parameters: {top_k: 3
        connections: []
        """
    )
    [problem] = problems_of(path)
    assert problem.source == str(path)
    assert problem.line == 5 and problem.column >= 1
    assert "YAML syntax error" in problem.message
    assert str(problem).startswith(f"{path}:5:")


@pytest.mark.parametrize(
    ("written", "reason", "suggested"),
    [
        ("hopstack.components.retrieval.BM25Retreiver", "unknown component type", "retrieval.BM25Retriever"),
        ("hopstack.components.retrievers.DenseRetriever", "module not found", "retrieval.DenseRetriever"),
    ],
    ids=["misspelt-class", "wrong-module"],
)
def test_unknown_component_type_suggests_nearest(write_yaml, written, reason, suggested):
    path = write_yaml(f"components:\n  node:\n    type: {written}\nconnections: []\n")
    [problem] = problems_of(path)
    assert (problem.line, problem.column, problem.component) == (3, 11, "node")
    assert reason in problem.message
    assert f"nearest known types: hopstack.components.{suggested}" in problem.message


def test_unknown_init_parameter_is_located_and_suggested(write_yaml):
    path = write_yaml(
        f"""
        components:
          bm25:
            type: {BM25}
            init_parameters:
              top_k: 5
              topk: 3
        metadata:
          hopstack: {{inputs: [query]}}
        connections: []
        """
    )
    [problem] = problems_of(path)
    assert (problem.line, problem.component) == (6, "bm25")
    assert "unknown init parameter 'topk'" in problem.message and "'top_k'" in problem.message


def test_missing_required_init_parameter(write_yaml):
    path = write_yaml(
        """
        components:
          prompt:
            type: haystack.components.builders.prompt_builder.PromptBuilder
            init_parameters: {}
        connections: []
        """
    )
    problems = problems_of(path)
    assert any("missing required init parameter 'template'" in p.message for p in problems)


def test_invalid_init_value_is_reported_not_raised(write_yaml):
    path = write_yaml(
        f"""
        components:
          bm25:
            type: {BM25}
            init_parameters: {{method: okapi}}
        connections: []
        """
    )
    [problem] = problems_of(path)
    assert "cannot create BM25Retriever" in problem.message and "okapi" in problem.message


def test_unconnected_mandatory_input(write_yaml):
    path = write_yaml(
        f"""
        components:
          bm25:
            type: {BM25}
          ranker:
            type: {RANKER}
            init_parameters: {{meta_field: year}}
        connections: []
        """
    )
    [problem] = problems_of(path)
    assert (problem.component, problem.socket, problem.line) == ("ranker", "documents", 5)
    assert "mandatory input 'documents' is not connected" in problem.message


def test_declared_pipeline_inputs_feed_mandatory_sockets(write_yaml):
    path = write_yaml(
        f"""
        metadata:
          hopstack:
            inputs: [query, documents]
        components:
          ranker:
            type: {RANKER}
            init_parameters: {{meta_field: year}}
          bm25:
            type: {BM25}
        connections: []
        """
    )
    assert problems_of(path) == []


def test_type_incompatible_connection(write_yaml):
    path = write_yaml(
        f"""
        components:
          first:
            type: {BM25}
          second:
            type: {BM25}
        connections:
          - sender: first.documents
            receiver: second.query
        """
    )
    [problem] = problems_of(path)
    assert (problem.line, problem.component, problem.socket) == (7, "second", "query")
    assert "type mismatch" in problem.message and "list[Document]" in problem.message and "str" in problem.message


def test_unknown_sockets_and_components_in_connections(write_yaml):
    path = write_yaml(
        f"""
        components:
          bm25:
            type: {BM25}
          ranker:
            type: {RANKER}
            init_parameters: {{meta_field: year}}
        connections:
          - sender: bm25.docs
            receiver: ranker.documents
          - sender: bm25.documents
            receiver: rankr.documents
        """
    )
    problems = problems_of(path)
    messages = [(p.line, p.message) for p in problems]
    assert any(line == 8 and "unknown output socket 'docs'" in m and "'documents'" in m for line, m in messages)
    assert any(line == 11 and "unknown component 'rankr'" in m and "'ranker'" in m for line, m in messages)


def test_module_outside_allowlist_is_refused_without_import(write_yaml):
    assert "hopstack_untrusted_module" not in sys.modules
    path = write_yaml(
        """
        components:
          evil:
            type: hopstack_untrusted_module.Component
          shell:
            type: subprocess.Popen
        connections: []
        """
    )
    problems = problems_of(path)
    assert [p.component for p in problems] == ["evil", "shell"]
    assert all("outside the allowlist" in p.message for p in problems)
    assert "hopstack_untrusted_module" not in sys.modules


def test_cycle_points_to_the_iterate_component(write_yaml):
    path = write_yaml(
        f"""
        components:
          a:
            type: {RANKER}
            init_parameters: {{meta_field: year}}
          b:
            type: {RANKER}
            init_parameters: {{meta_field: year}}
        connections:
          - sender: a.documents
            receiver: b.documents
          - sender: b.documents
            receiver: a.documents
        """
    )
    problems = problems_of(path)
    cycle = [p for p in problems if "cycle" in p.message]
    assert len(cycle) == 1
    assert "a -> b -> a" in cycle[0].message or "b -> a -> b" in cycle[0].message
    assert "hopstack.components.iterate" in cycle[0].message and "docs/concepts/iteration.md" in cycle[0].message
    assert cycle[0].line in (9, 11)


def test_duplicate_component_name_is_an_error(write_yaml):
    path = write_yaml(
        f"""
        components:
          bm25:
            type: {BM25}
          bm25:
            type: {BM25}
        connections: []
        """
    )
    [problem] = problems_of(path)
    assert problem.line == 4 and "duplicate key 'bm25'" in problem.message


def test_unknown_top_level_and_hopstack_keys(write_yaml):
    path = write_yaml(
        f"""
        component:
          bm25:
            type: {BM25}
        metadata:
          hopstack: {{batchsize: 4}}
        """
    )
    problems = problems_of(path)
    messages = " | ".join(p.message for p in problems)
    assert "unknown top-level key 'component'" in messages and "'components'" in messages
    assert "unknown hopstack setting 'batchsize'" in messages and "'batch_size'" in messages
    assert "missing 'components'" in messages


def test_every_problem_is_reported_at_once(write_yaml):
    path = write_yaml(
        f"""
        components:
          bm25:
            type: {BM25}
            init_parameters: {{topk: 3}}
          other:
            type: hopstack.components.retrieval.Nothing
          ranker:
            type: {RANKER}
            init_parameters: {{meta_field: year}}
        connections:
          - sender: bm25.documents
            receiver: ranker.query
        """
    )
    problems = problems_of(path)
    assert len(problems) >= 3
    assert {p.component for p in problems} >= {"bm25", "other", "ranker"}


def test_load_pipeline_raises_with_all_problems_and_builds_nothing(write_yaml):
    path = write_yaml(
        f"""
        components:
          bm25:
            type: {BM25}
            init_parameters: {{topk: 3, index: /nonexistent.jsonl}}
        connections: []
        """
    )
    with pytest.raises(PipelineValidationError) as info:
        load_pipeline(path)
    assert "unknown init parameter 'topk'" in str(info.value)


def test_unreadable_file_is_one_problem(tmp_path):
    [problem] = problems_of(tmp_path / "missing.yaml")
    assert "cannot read the file" in problem.message
    [problem] = problems_of(tmp_path / ("x" * 300 + ".yaml"))
    assert "cannot read the file: [Errno 36] File name too long" in problem.message


def test_nested_spec_problems_are_located_at_the_nested_key(write_yaml):
    path = write_yaml(
        """
        components:
          rerank:
            type: hopstack.components.rerankers.PointwiseReranker
            init_parameters:
              scorer:
                type: llm
                init_parameters:
                  llm: qwen2.5-0.5b
                  max_pasage_words: 100
          truncate:
            type: hopstack.components.compression.ClueTruncator
            init_parameters:
              reader: {type: reader, llm: qwen2.5-0.5b}
          hops:
            type: hopstack.components.iterate.IterativeRetriever
            init_parameters:
              retriever: {type: hopstack.components.retrieval.Nope}
              stopper:
                type: hopstack.components.stopping.NaturalLogicStopper
                init_parameters:
                  prover: {type: natural-logik}
        connections: []
        """
    )
    problems = {p.component: p for p in problems_of(path)}
    typo = problems["rerank"]
    assert (typo.line, typo.column) == (9, 11)
    assert "scorer: unknown init parameter 'max_pasage_words' for LLMScorer" in typo.message
    flat = problems["truncate"]
    assert (flat.line, flat.column) == (13, 30) and "move them under init_parameters" in flat.message
    [*hop_problems] = [p for p in problems_of(path) if p.component == "hops"]
    messages = {(p.line, p.column): p.message for p in hop_problems}
    assert "unknown type 'hopstack.components.retrieval.Nope'" in messages[(17, 25)]
    assert "stopper.prover: unknown type 'natural-logik'" in messages[(21, 26)]
    assert "did you mean 'natural-logic'" in messages[(21, 26)]


def test_old_nested_dialects_are_refused_with_the_new_form(write_yaml):
    path = write_yaml(
        """
        components:
          reader:
            type: hopstack.components.generation.AnswerGenerator
            init_parameters:
              llm: {backend: openai, base_url: "http://127.0.0.1:8000/v1", model: qwen}
        connections: []
        """
    )
    [problem] = problems_of(path)
    assert problem.component == "reader"
    assert "write {type: BACKEND, init_parameters: {...}}" in problem.message


def test_a_broken_sender_does_not_make_its_receiver_look_unfed(write_yaml):
    path = write_yaml(
        """
        components:
          bm25:
            type: hopstack.components.retrieval.BM25Retriever
          truncate:
            type: hopstack.components.compression.ClueTruncator
            init_parameters:
              reader: {llm: qwen2.5-0.5b}
          reader:
            type: hopstack.components.generation.AnswerGenerator
        connections:
          - {sender: bm25.documents, receiver: truncate.documents}
          - {sender: truncate.documents, receiver: reader.documents}
        metadata: {hopstack: {inputs: [query]}}
        """
    )
    [problem] = problems_of(path)
    assert (problem.line, problem.column, problem.component) == (7, 7, "truncate")
    assert "cannot create ClueTruncator: reader must be a mapping {type, init_parameters}" in problem.message


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)},"
    f" *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
    for i in range(8)
)  # ~700 bytes that a plain YAML loader expands to 10^9 items
BM25_COMPONENT = f"components:\n  bm25:\n    type: {BM25}\n"
ODD_FILES = {
    "metadata-not-a-mapping": BM25_COMPONENT + "metadata: 5\n",
    "hopstack-settings-not-a-mapping": BM25_COMPONENT + "metadata: {hopstack: 5}\n",
    "inputs-not-a-list": BM25_COMPONENT + "metadata: {hopstack: {inputs: 5}}\n",
    "inputs-not-names": BM25_COMPONENT + "metadata: {hopstack: {inputs: [1]}}\n",
    "unhashable-key": BM25_COMPONENT + "connections: []\n? [a, b]\n: 1\n",
    "nested-1000-deep": BM25_COMPONENT + "metadata: " + "[" * 1000 + "]" * 1000 + "\n",
    "type-of-2000-parts": "components:\n  x:\n    type: " + "a." * 2000 + "X\n",
    "alias-bomb": BM25_COMPONENT + "metadata:\n  " + BOMB.replace("\n", "\n  "),
    "component-name-not-text": f"components:\n  5:\n    type: {BM25}\nconnections: []\n",
    "init-parameters-falsy": f"components:\n  bm25:\n    type: {BM25}\n    init_parameters: 0\n",
    "nested-init-parameters-falsy": (
        "components:\n  m:\n    type: hopstack.components.decomposition.MultiQueryRetriever\n    init_parameters:\n"
        f"      retriever: {{type: {BM25}, init_parameters: []}}\n"
    ),
    "connections-null": BM25_COMPONENT + "connections:\n",
    "tag-that-does-not-fit": BM25_COMPONENT + "metadata: {hopstack: {description: !!timestamp x}}\n",
    "cli-module": "components:\n  x:\n    type: hopstack.__main__.X\n",
    "cli-module-nested": (
        "components:\n  r:\n    type: hopstack.components.rerankers.PointwiseReranker\n    init_parameters:\n"
        "      scorer: {type: hopstack.cli.app}\n"
    ),
}


@pytest.mark.parametrize("name", ODD_FILES)
def test_odd_files_get_problems_never_a_crash_or_a_hang(name, write_yaml, cli):
    path = write_yaml(ODD_FILES[name])
    problems = problems_of(path)
    assert problems and all(p.source == str(path) for p in problems)
    assert not any(p.message.startswith("cannot check this file") for p in problems), "a check failed"
    assert all(len(p.message) < 600 for p in problems), "echoed values are shortened"
    code, _, err = cli("validate", path)
    assert code == 2 and err.count(str(path)) >= 1 and "Traceback" not in err


def test_the_cli_and_main_modules_are_never_imported(write_yaml, monkeypatch):
    imported = []
    monkeypatch.setattr("importlib.import_module", lambda name, *a: imported.append(name))
    for name in ("cli-module", "cli-module-nested"):
        [problem] = problems_of(write_yaml(ODD_FILES[name]))
        assert "outside the allowlist" in problem.message
    assert imported == []


def test_what_is_not_a_regular_file_is_refused_unread(tmp_path):
    [problem] = problems_of(tmp_path)
    assert problem.message == "cannot read the file: not a regular file"
    if Path("/dev/zero").exists():  # endless: reading it whole never ends
        [problem] = problems_of("/dev/zero")
        assert problem.message == "cannot read the file: not a regular file"


def test_text_with_a_lone_surrogate_is_a_problem_not_a_failed_check():
    _, [problem] = validate_text("components:\n  x: {type: \ud800}\n", "p.yaml")
    assert (problem.line, problem.column, problem.message) == (2, 13, "not text: a lone surrogate (U+D800)")


def test_a_huge_file_is_refused_before_it_is_parsed(write_yaml):
    path = write_yaml(BM25_COMPONENT + "metadata: {hopstack: {description: '" + "x" * (1 << 18) + "'}}\n")
    [problem] = problems_of(path)
    assert "over 262,144 characters; pipeline files are read up to that" in problem.message


FUSE = "hopstack.components.fusion.DocumentFusion"
WRONG_VALUES = {
    "top_k nan": (BM25, "top_k: .nan", "init parameter 'top_k' of BM25Retriever must be int, got nan"),
    "top_k inf": (BM25, "top_k: .inf", "must be int, got inf"),
    "top_k 1.5": (BM25, "top_k: 1.5", "must be int, got 1.5"),
    "k1 text": (BM25, "k1: '10'", "init parameter 'k1' of BM25Retriever must be float, got '10'"),
    "k1 null": (BM25, "k1: null", "must be float, got None"),
    "k1 negative": (BM25, "k1: -1", "k1 >= 0 and 0 <= b <= 1"),
    "k1 too large for a float": (BM25, "k1: 1" + "0" * 400, "init parameter 'k1' of BM25Retriever must be float"),
    "weights nan": (FUSE, "weights: [0.5, .nan]", "init parameter 'weights' of DocumentFusion must be"),
    "weights negative": (FUSE, "weights: [0.5, -1]", "weights must be finite and non-negative"),
}


@pytest.mark.parametrize("name", WRONG_VALUES)
def test_values_that_would_fail_or_mislead_at_run_time_are_refused_by_validate(name, write_yaml):
    component_type, parameter, message = WRONG_VALUES[name]
    path = write_yaml(f"components:\n  x:\n    type: {component_type}\n    init_parameters: {{{parameter}}}\n")
    [problem] = problems_of(path)
    assert problem.component == "x" and message in problem.message


def test_a_pipeline_without_components_is_refused(write_yaml):
    [problem] = problems_of(write_yaml("components: {}\nconnections: []\n"))
    assert "'components' must be a non-empty mapping" in problem.message


def test_fusion_weights_must_be_one_per_connected_list(write_yaml):
    from conftest import YAML_DIR

    text = (YAML_DIR / "hybrid.yaml").read_text()
    assert not problems_of(write_yaml(text))
    path = write_yaml(text.replace("weights: [0.7, 0.3]", "weights: [0.5, 0.3, 0.2]"))
    (problem,) = problems_of(path)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "weights:" in t)
    assert (problem.line, problem.component) == (line, "fuse")
    assert "3 weights for 2 ranked lists; give one per list, in the order bm25, dense" in problem.message
