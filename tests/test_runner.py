"""The batched runner against haystack.Pipeline.run, item by item, on graphs that exercise its rules."""

import time
from typing import Any

import pytest
from haystack import Pipeline, component
from haystack.core.component.types import Variadic

from hopstack.core.batch import BatchComponent
from hopstack.errors import HopstackInputError, PipelineRunError
from hopstack.graphs import BatchRunner, input_digest, pipeline_fingerprints
from hopstack.testing import assert_outputs_equal


@component
class Upper(BatchComponent):
    """Batched: upper-cases its text and counts its calls."""

    def __init__(self, suffix: str = ""):
        self.suffix = suffix
        self.batch_calls = 0

    @component.output_types(text=str)
    def run(self, text: str) -> dict[str, Any]:
        return self.run_single(text=text)

    def run_batch(self, text: list[str]) -> dict[str, list[Any]]:
        self.batch_calls += 1
        return {"text": [t.upper() + self.suffix for t in text]}


@component
class Route:
    """Not batched: sends short texts one way and long ones the other (only one output fires)."""

    @component.output_types(short=str, long=str)
    def run(self, text: str) -> dict[str, Any]:
        return {"short": text} if len(text) < 8 else {"long": text}


@component
class Join:
    """A variadic join: the pipeline orders its values by sender name."""

    @component.output_types(joined=str)
    def run(self, parts: Variadic[str]) -> dict[str, Any]:
        return {"joined": "|".join(parts)}


@component
class Greet(BatchComponent):
    """An optional input with a default, and a list input fed by a str output (Haystack wraps it)."""

    @component.output_types(greeting=str)
    def run(self, names: list[str], greeting: str = "hello") -> dict[str, Any]:
        return self.run_single(names=names, greeting=greeting)

    def run_batch(self, names: list[list[str]], greeting: list[str]) -> dict[str, list[Any]]:
        return {"greeting": [f"{g} {' and '.join(n)}" for n, g in zip(names, greeting)]}


@component
class Broken(BatchComponent):
    """run_batch returns one item too few."""

    @component.output_types(text=str)
    def run(self, text: str) -> dict[str, Any]:
        return {"text": text}

    def run_batch(self, text: list[str]) -> dict[str, list[Any]]:
        return {"text": text[:-1]}


@component
class Fails:
    @component.output_types(text=str)
    def run(self, text: str) -> dict[str, Any]:
        raise RuntimeError("boom")


def graph() -> Pipeline:
    pipe = Pipeline()
    pipe.add_component("upper", Upper())
    pipe.add_component("route", Route())
    pipe.add_component("shout", Upper(suffix="!"))
    pipe.add_component("whisper", Upper(suffix="..."))
    pipe.add_component("join", Join())
    pipe.add_component("greet", Greet())
    pipe.connect("upper.text", "route.text")
    pipe.connect("route.short", "shout.text")
    pipe.connect("route.long", "whisper.text")
    pipe.connect("whisper.text", "join.parts")
    pipe.connect("upper.text", "join.parts")
    pipe.connect("shout.text", "greet.names")
    return pipe


INPUTS = [{"text": t} for t in ["ab", "a longer text", "xyz", "another long one", "q"]]


def test_runner_matches_pipeline_run_with_branches_variadics_defaults_and_conversion():
    expected = [graph().run(dict(item)) for item in INPUTS]
    result = BatchRunner(graph(), batch_size=2).run(INPUTS, trace=True)
    assert_outputs_equal(result.outputs, expected)
    assert result.outputs[0]["greet"] == {"greeting": "hello AB!"}
    assert result.outputs[1]["join"] == {"joined": "A LONGER TEXT|A LONGER TEXT..."}
    assert "greet" not in result.outputs[1]  # the short branch did not fire for a long text


def test_batches_are_cut_into_chunks_and_unbatched_components_are_mapped():
    pipe = graph()
    started = time.perf_counter()
    result = BatchRunner(pipe, batch_size=2).run(INPUTS)
    elapsed = time.perf_counter() - started
    stats = result.stats
    assert stats["upper"].batched and stats["upper"].batch_sizes == [2, 2, 1]
    assert stats["upper"].calls == 3 == pipe.get_component("upper").batch_calls
    assert not stats["route"].batched and stats["route"].calls == 5
    assert stats["shout"].items == 3 and stats["whisper"].items == 2
    # every node's time is its own: each ran for some time, and together they fit in the run
    assert all(s.wall_s > 0 for s in stats.values() if s.calls)
    assert sum(s.wall_s for s in stats.values()) <= elapsed


def test_progress_hears_each_node_start_then_advance():
    """A node is announced before it warms up (0 done), then after each batch or item; a node with nothing to
    do (whisper, given two short texts) is not announced."""
    heard = []
    BatchRunner(graph(), batch_size=2).run([INPUTS[0], INPUTS[2]], progress=lambda *report: heard.append(report))
    assert heard == [
        *(("upper", 0, 2), ("upper", 2, 2)),
        *(("route", 0, 2), ("route", 1, 2), ("route", 2, 2)),  # no run_batch: one call an item
        *(("shout", 0, 2), ("shout", 2, 2), ("greet", 0, 2), ("greet", 2, 2)),
        *(("join", 0, 2), ("join", 1, 2), ("join", 2, 2)),
    ]


def test_trace_holds_every_node_that_ran():
    result = BatchRunner(graph()).run(INPUTS, trace=True)
    assert set(result.traces[0]) == {"upper", "route", "shout", "join", "greet"}
    assert result.traces[0]["upper"] == {"text": "AB"}
    assert set(result.traces[1]) == {"upper", "route", "whisper", "join"}


def test_targets_run_only_what_they_need_and_return_all_their_outputs():
    pipe = graph()
    result = BatchRunner(pipe).run(INPUTS, targets=["shout"])
    assert result.outputs[0] == {"shout": {"text": "AB!"}}
    assert result.outputs[1] == {}  # the short branch did not fire for a long text
    assert result.stats["greet"].calls == result.stats["join"].calls == result.stats["whisper"].calls == 0
    assert result.stats["shout"].items == 3
    with pytest.raises(ValueError, match="unknown target"):
        BatchRunner(graph()).run(INPUTS, targets=["nowhere"])


def test_batch_size_comes_from_metadata():
    pipe = graph()
    pipe.metadata = {"hopstack": {"batch_size": 4}}
    assert BatchRunner(pipe).batch_size == 4
    assert BatchRunner(pipe, batch_size=3).batch_size == 3


def test_wrong_run_batch_length_names_the_component():
    pipe = Pipeline()
    pipe.add_component("broken", Broken())
    with pytest.raises(PipelineRunError, match="component 'broken'.*lists of 2 items"):
        BatchRunner(pipe, batch_size=2).run(
            [{"text": "a"}, {"text": "b"}],
        )


def test_component_failure_names_component_and_items():
    pipe = Pipeline()
    pipe.add_component("fails", Fails())
    with pytest.raises(
        PipelineRunError, match=r"component 'fails' \(Fails\) failed on items q1, q2: RuntimeError: boom"
    ):
        BatchRunner(pipe).run([{"text": "a"}, {"text": "b"}], item_ids=["q1", "q2"])


def test_unknown_flat_input_is_an_error():
    with pytest.raises(HopstackInputError, match="input 'txt' feeds no component"):
        BatchRunner(graph()).run([{"txt": "a"}])


def test_nested_inputs_are_accepted():
    result = BatchRunner(graph()).run([{"upper": {"text": "ab"}}])
    assert result.outputs[0]["greet"] == {"greeting": "hello AB!"}


def test_question_input_uses_declared_sockets_and_known_extras():
    pipe = Pipeline(metadata={"hopstack": {"inputs": ["text"]}})
    pipe.add_component("upper", Upper())
    runner = BatchRunner(pipe)
    assert runner.question_input("hi", {"type": "bridge"}) == {"text": "hi"}
    pipe2 = Pipeline()
    pipe2.add_component("upper", Upper())
    with pytest.raises(HopstackInputError, match="no pipeline input takes the question"):
        BatchRunner(pipe2).question_input("hi")


def test_fingerprints_follow_type_parameters_and_upstream():
    first, second = pipeline_fingerprints(graph()), pipeline_fingerprints(graph())
    assert first == second
    changed = graph()
    changed.get_component("shout").suffix = "?"
    fp = pipeline_fingerprints(changed)
    assert fp["shout"] != first["shout"]
    assert fp["greet"] != first["greet"]  # downstream of the change
    assert fp["whisper"] == first["whisper"] and fp["upper"] == first["upper"]  # not downstream


def test_shared_prefix_has_the_same_fingerprint_in_different_pipelines():
    a = Pipeline()
    a.add_component("upper", Upper())
    b = graph()
    assert pipeline_fingerprints(a)["upper"] == pipeline_fingerprints(b)["upper"]


def test_input_digest_is_stable_and_discriminating():
    assert input_digest({"text": "a", "k": [1, 2]}) == input_digest({"k": [1, 2], "text": "a"})
    assert input_digest({"text": "a"}) != input_digest({"text": "b"})
