"""GroupRank-style groupwise and setwise reranking: grouping and shuffles, the 0.6/0.4 fusion, robust
parsing of JSON answers with stated fallbacks, the setwise heap sort, batching, and real SmolLM2 runs."""

import itertools
import re

import numpy as np
import pytest
from haystack import Document

from hopstack.components.groupwise import GroupwiseReranker, SetwiseReranker, heap_top_k, parse_group_scores
from hopstack.testing import assert_run_batch_matches_run

TINY_LLM = {"type": "llama.cpp", "init_parameters": {"model": "smollm2-135m", "n_ctx": 1024}}


def _docs(ids, scores=None):
    return [Document(id=i, content=i, score=s) for i, s in zip(ids, scores or [1.0] * len(ids))]


def _listed(prompt, pattern):
    return dict(re.findall(pattern, prompt[-1]["content"], re.MULTILINE))


# -- setwise -----------------------------------------------------------------------------------------
def _run_heap(n, k, num_child, value):
    sort = heap_top_k(n, k, num_child)
    comparisons, answer = 0, None
    try:
        while True:
            members = sort.send(answer)
            comparisons += 1
            assert len(members) <= num_child + 1 and len(set(members)) == len(members)
            answer = max(range(len(members)), key=lambda j: value[members[j]])
    except StopIteration as done:
        return done.value, comparisons


@pytest.mark.parametrize(("num_child", "k"), [(1, 3), (2, 4), (3, 10), (3, 2), (4, 20)])
def test_setwise_heap_sort_puts_the_true_top_k_first_for_any_order(num_child, k):
    rng = np.random.default_rng(num_child * 100 + k)
    for n in (0, 1, 2, 5, 13, 20):
        value = rng.permutation(n).tolist()
        order, _ = _run_heap(n, k, num_child, value)
        assert sorted(order) == list(range(n)), "a permutation: nothing dropped or repeated"
        best = sorted(range(n), key=lambda c: -value[c])
        assert order[: min(k, n)] == best[: min(k, n)]


def test_setwise_heap_sort_of_twenty_with_three_children_needs_few_comparisons():
    worst = max(_run_heap(20, 10, 3, list(p))[1] for p in itertools.islice(itertools.permutations(range(20)), 50))
    assert worst <= 40, "about n/c + k log_c(n) comparisons, not n log n"


class _SetLLM:
    """Fake LLM for setwise prompts: label X's log-probability is the relevance of passage X's text."""

    def __init__(self, relevance):
        self.relevance = relevance
        self.calls = []

    def score(self, prompts, candidates):
        self.calls.append(len(prompts))
        rows = []
        for prompt in prompts:
            listed = _listed(prompt, r'^Passage ([A-Z]): "(.*)"$')
            rows.append([self.relevance[listed[c]] if c in listed else -100.0 for c in candidates])
        return rows


def _setwise(relevance, **params):
    reranker = SetwiseReranker(llm=TINY_LLM, **params)
    reranker._llm = _SetLLM(relevance)
    return reranker


def test_setwise_ranks_the_top_k_and_batches_each_step_over_questions():
    relevance = {d: float(r) for r, d in enumerate("abcdefgh")}  # h best
    reranker = _setwise(relevance, num_child=2, top_k=3)
    out = reranker.run_batch(query=["q1", "q2", "q3"], documents=[_docs("abcdefgh"), _docs("ba"), _docs("a")])
    assert [[d.id for d in docs] for docs in out["documents"]] == [["h", "g", "f"], ["b", "a"], ["a"]]
    assert [d.score for d in out["documents"][0]] == [8.0, 7.0, 6.0]
    prompts = [t["llm_prompts"] for t in out["trace"]]
    assert prompts[2] == 0 and prompts[1] == 1
    assert len(reranker._llm.calls) == max(prompts) and reranker._llm.calls[0] == 2, "one call per step"


def test_setwise_run_batch_matches_run():
    reranker = _setwise({d: float(ord(d) % 7) for d in "abcdefg"}, num_child=3, top_k=4)
    inputs = [{"query": "q", "documents": _docs(ids), "top_k": k} for ids, k in (("abcdefg", None), ("ca", 5), ("", 1))]
    assert_run_batch_matches_run(reranker, inputs)


# -- groupwise (GroupRank style) -------------------------------------------------------------------
class _GradeLLM:
    """Fake LLM for GroupRank prompts: in logits mode all mass on the grade of the document asked for;
    in generate mode the answer ``answer(listed)`` writes."""

    def __init__(self, grade, answer=None):
        self.grade = grade
        self.answer = answer
        self.calls = []

    def score(self, prompts, candidates):
        self.calls.append(len(prompts))
        rows = []
        for prompt in prompts:
            listed = _listed(prompt, r"^\[(\d+)\]\. (.*)$")
            asked = re.search(r"score of document \[(\d+)\]", prompt[-1]["content"]).group(1)
            rows.append([0.0 if c == str(self.grade[listed[asked]]) else -60.0 for c in candidates])
        return rows

    def generate(self, prompts, max_tokens, temperature):
        self.calls.append(len(prompts))
        return [self.answer(_listed(p, r"^\[(\d+)\]\. (.*)$")) for p in prompts]


def _grouprank(grade, answer=None, **params):
    reranker = GroupwiseReranker(llm=TINY_LLM, **params)
    reranker._llm = _GradeLLM(grade, answer)
    return reranker


def test_groups_are_repeated_seeded_shuffles_of_all_candidates():
    reranker = GroupwiseReranker(llm=TINY_LLM, group_size=3, repeats=2)
    groups = reranker.groups("q", 7)
    assert [len(g) for g in groups] == [3, 3, 1, 3, 3, 1]
    assert sorted(sum(groups[:3], [])) == list(range(7)) and sorted(sum(groups[3:], [])) == list(range(7))
    assert reranker.groups("q", 7) == groups and reranker.groups("another q", 7) != groups


def test_grouprank_fuses_the_group_grade_with_the_min_max_scaled_first_stage_score():
    grade = {"a": 2, "b": 9, "c": 5, "d": 5}
    reranker = _grouprank(grade, group_size=2, repeats=3, top_k=4)
    out = reranker.run(query="q", documents=_docs("abcd", [10.0, 0.0, 5.0, 6.0]))
    expected = {d: 0.6 * grade[d] / 10 + 0.4 * s / 10 for d, s in zip("abcd", [10.0, 0.0, 5.0, 6.0])}
    assert [d.id for d in out["documents"]] == sorted(expected, key=lambda d: -expected[d])
    assert [d.score for d in out["documents"]] == pytest.approx(sorted(expected.values(), reverse=True))
    assert out["trace"] == {"llm_prompts": 12}, "every document once per repeat"
    assert reranker._llm.calls == [12], "every prompt of the batch in one call"


def test_grouprank_generate_mode_parses_json_and_counts_what_it_cannot_use():
    def answer(listed):  # leaves out "b", writes an out-of-range id and repeats an id
        pairs = [f'"[{i}]": {"7" if text == "a" else "3"}' for i, text in listed.items() if text != "b"]
        return "<reason>hm</reason><answer>```json {" + ", ".join([*pairs, '"[9]": 10', pairs[0]]) + "}```</answer>"

    reranker = _grouprank({}, answer, score_mode="generate", group_size=3, repeats=2, fusion_weight=1.0)
    out = reranker.run(query="q", documents=_docs("abc"))
    assert [d.id for d in out["documents"]] == ["a", "b", "c"]
    assert [d.score for d in out["documents"]] == pytest.approx([0.7, 0.5, 0.3]), "b: the mean group score"
    trace = out["trace"]
    assert trace == {"llm_prompts": 2, "out_of_range": 2, "repeated": 2, "missing": 2, "unscored": 1}


def test_parse_group_scores_clips_and_reads_the_answer_part():
    scores, counts = parse_group_scores('<reason>"[1]": 2</reason><answer>{"[1]": 12, "[2]": -1, [3]: 4.5}', 3)
    assert scores == {0: 10.0, 1: 0.0, 2: 4.5} and counts == {"out_of_range": 0, "repeated": 0, "missing": 0}
    assert parse_group_scores("no scores at all", 2) == ({}, {"out_of_range": 0, "repeated": 0, "missing": 2})


def test_grouprank_run_batch_matches_run():
    reranker = _grouprank({d: ord(d) % 11 for d in "abcdefg"}, group_size=3, top_k=5)
    inputs = [{"query": "q", "documents": _docs(ids), "top_k": k} for ids, k in (("abcdefg", None), ("ca", 5), ("", 1))]
    assert_run_batch_matches_run(reranker, inputs)


def test_bad_group_and_set_parameters_are_refused():
    with pytest.raises(ValueError, match="score_mode"):
        GroupwiseReranker(score_mode="vibes")
    with pytest.raises(ValueError, match="fusion_weight"):
        GroupwiseReranker(fusion_weight=1.5)
    with pytest.raises(ValueError, match="num_child"):
        SetwiseReranker(num_child=26)


@pytest.mark.slow
@pytest.mark.parametrize("make", [
    lambda: GroupwiseReranker(llm=TINY_LLM, group_size=3, repeats=1, top_k=5, cache=False),
    lambda: GroupwiseReranker(llm=TINY_LLM, score_mode="generate", group_size=5, top_k=5, max_tokens=40, cache=False),
    lambda: SetwiseReranker(llm=TINY_LLM, num_child=2, top_k=5, cache=False),
])  # fmt: skip
def test_groupwise_and_setwise_on_smollm2_return_each_candidate_once(make):
    documents = [Document(id=str(i), content=f"Passage {i} about looms.", score=float(i)) for i in range(5)]
    out = make().run(query="Who founded Brannock Looms?", documents=documents)
    assert sorted(d.id for d in out["documents"]) == [str(i) for i in range(5)]
