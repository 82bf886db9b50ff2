"""CompSelect clue selection: sentence splitting, the extractor's top-M and KNN rule, the reranker's
answerability/relevance mix, the truncator's stable-answer and mass rules (batched in lockstep), and the
clue pipeline on real MultiHop-RAG documents."""

import math

import numpy as np
import pytest
from haystack import Document

from conftest import SHARED_DATA
from hopstack.components.compression import ANSWERABILITY_PROMPT, ClueExtractor, ClueReranker, ClueTruncator
from hopstack.core.spec import SHORT_NAMES
from hopstack.core.text import split_sentences
from hopstack.testing import assert_run_batch_matches_run

TINY_LLM = {"type": "llama.cpp", "init_parameters": {"model": "smollm2-135m", "n_ctx": 2048}}


def test_sentences_are_split_also_where_a_corpus_glued_them():
    text = "Hermann II was Landgrave from 1376 to 1413.Hermann studied in Paris. The U.S. Army came."
    assert split_sentences(text) == [
        "Hermann II was Landgrave from 1376 to 1413.",
        "Hermann studied in Paris.",
        "The U.S. Army came.",
    ]
    assert split_sentences("  ") == []


class WordScorer:
    """Scores a (question, sentence) pair by the number of the question's words in the sentence."""

    calls: list[int] = []

    def __init__(self, **_):
        pass

    def warm_up(self):
        pass

    def score(self, pairs):
        type(self).calls.append(len(pairs))
        return np.array([len(set(q.lower().split()) & set(p.lower().rstrip(".").split())) for q, p in pairs], float)


@pytest.fixture
def word_scorer(monkeypatch):
    monkeypatch.setitem(SHORT_NAMES, "words", WordScorer)
    WordScorer.calls = []
    return {"type": "words"}


DOCUMENTS = [
    Document(
        id="d1",
        content="Ada Brannock founded the mill in 1820. The valley is green and wide. Short one.",
        meta={"doc_id": "article-1"},
    ),
    Document(id="d2", content="The mill was founded by Ada Brannock. Ada Brannock founded the mill in 1820."),
]


def test_extractor_keeps_the_top_sentences_once_each_with_their_source(word_scorer):
    extractor = ClueExtractor(scorer=word_scorer, top_m=2, knn_threshold=0.0, min_words=4)
    clues = extractor.run(query="who founded the mill", documents=DOCUMENTS)["documents"]
    assert [c.content for c in clues] == [
        "Ada Brannock founded the mill in 1820.",
        "The mill was founded by Ada Brannock.",
    ]
    first = clues[0]
    assert first.id == "d1:0" and first.meta["source_id"] == "d1" and first.meta["doc_id"] == "article-1"
    assert first.meta["clue_score"] == 3.0 and first.meta["neighbour"] is False
    assert clues[1].meta["doc_id"] == "d2", "a document without doc_id is its own source"
    assert WordScorer.calls == [3], "3 sentences scored: 'Short one.' is too short, the repeat counted once"


@pytest.mark.slow
def test_extractor_adds_the_near_neighbours_of_kept_sentences(word_scorer):
    documents = [
        Document(
            id="n",
            content="Ada Brannock founded the mill in 1820. The mill was founded in 1820 by Ada Brannock. "
            "Stock prices fell sharply on Tuesday afternoon.",
        )
    ]
    query = "Ada Brannock founded the mill in 1820"
    without = ClueExtractor(scorer=word_scorer, top_m=1, knn_threshold=0.0).run(query=query, documents=documents)
    assert len(without["documents"]) == 1
    clues = ClueExtractor(scorer=word_scorer, top_m=1, knn_threshold=0.25).run(query=query, documents=documents)
    assert [(c.id, c.meta["neighbour"]) for c in clues["documents"]] == [("n:0", False), ("n:1", True)]


def test_extractor_batch_matches_single_runs(word_scorer):
    extractor = ClueExtractor(scorer=word_scorer, top_m=3, knn_threshold=0.0)
    inputs = [
        {"query": "who founded the mill", "documents": DOCUMENTS},
        {"query": "is the valley green", "documents": DOCUMENTS[:1]},
        {"query": "nothing", "documents": []},
    ]
    assert_run_batch_matches_run(extractor, inputs)


class OddsScorer:
    """log-odds answerability: 'answer' in the sentence -> +2, else -2."""

    def __init__(self, **_):
        pass

    def warm_up(self):
        pass

    def score(self, pairs):
        return np.array([2.0 if "answer" in p else -2.0 for _, p in pairs])


def _clue(name, clue_score, text=None):
    return Document(id=name, content=text or name, meta={"clue_score": clue_score})


def test_clue_reranker_mixes_answerability_and_relevance(monkeypatch):
    monkeypatch.setitem(SHORT_NAMES, "llm", OddsScorer)
    clues = [_clue("a", 10.0), _clue("b", 5.0, "the answer"), _clue("c", 0.0)]
    ranked = ClueReranker(answerability={"type": "llm"}, weight=0.5).run(query="q", documents=clues)["documents"]
    high, low = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2))
    expected = {"b": 0.5 * high + 0.25, "a": 0.5 * low + 0.5, "c": 0.5 * low}
    assert [d.id for d in ranked] == ["b", "a", "c"]
    assert {d.id: d.score for d in ranked} == pytest.approx(expected)
    assert ranked[0].meta["answerability"] == pytest.approx(high) and ranked[0].meta["relevance"] == 0.5
    only_relevance = ClueReranker(answerability={"type": "llm"}, weight=0.0, top_k=2).run(query="q", documents=clues)
    assert [d.id for d in only_relevance["documents"]] == ["a", "b"]


def test_clue_reranker_gives_an_llm_scorer_the_answerability_prompt_and_scales_other_scorers(table_scorer):
    reranker = ClueReranker(answerability={"type": "llm", "init_parameters": {"llm": TINY_LLM}})
    assert reranker.answerability["init_parameters"]["prompt"] == ANSWERABILITY_PROMPT
    custom = ClueReranker(
        answerability={"type": "llm", "init_parameters": {"llm": TINY_LLM, "prompt": "{query} {passage}?"}}
    )
    assert custom.answerability["init_parameters"]["prompt"] == "{query} {passage}?"
    encoder = ClueReranker(answerability={"type": "table"}, weight=1.0)
    ranked = encoder.run(query="q", documents=table_scorer)["documents"]
    assert [d.id for d in ranked] == ["d", "c", "b", "a"], "the table's scores for query 'q'"
    assert [d.meta["answerability"] for d in ranked] == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0]), "min-max scaled"
    with pytest.raises(ValueError, match="weight"):
        ClueReranker(answerability={"type": "table"}, weight=1.5)


def _ranked(*answerability):
    return [Document(id=f"c{i}", content=f"clue {i}", meta={"answerability": a}) for i, a in enumerate(answerability)]


def test_mass_rule_keeps_the_smallest_prefix_with_enough_answerability():
    truncator = ClueTruncator(rule="mass", mass=0.8, max_clues=3)
    out = truncator.run_batch(
        query=["q1", "q2", "q3", "q4"],
        documents=[_ranked(0.5, 0.3, 0.1, 0.1), _ranked(0.9, 0.05, 0.05), _ranked(0.2, 0.2, 0.2, 0.2, 0.2), []],
    )
    assert [len(d) for d in out["documents"]] == [2, 1, 3, 0], "0.8 of the mass; at most max_clues"
    assert out["trace"][0] == {"rule": "mass", "kept": 2, "stopped": "mass"}
    assert out["trace"][3]["stopped"] == "no-clues"
    with pytest.raises(ValueError, match="answerability"):
        truncator.run(query="q", documents=[Document(id="x", content="x")])


class PrefixReader:
    """A fake reader LLM: the answer from k clues is ``answers[question][k - 1]`` with confidence
    ``confidence[question][k - 1]`` (a one-token answer); records the size of every call."""

    def __init__(self, answers, confidence):
        self.answers, self.confidence, self.calls = answers, confidence, []

    def generate_scored(self, prompts, max_tokens):
        self.calls.append(len(prompts))
        replies = []
        for prompt in prompts:
            user = prompt[-1]["content"]
            question = user.rsplit("Question: ", 1)[1].split("\n")[0]
            k = sum(line.startswith("[") for line in user.splitlines())
            replies.append((self.answers[question][k - 1], [math.log(self.confidence[question][k - 1])]))
        return replies


def test_stable_rule_keeps_the_first_confident_prefix_whose_answer_the_next_clue_does_not_change():
    truncator = ClueTruncator(
        rule="stable", confidence=0.6, max_clues=3, reader={"type": "reader", "init_parameters": {"llm": TINY_LLM}}
    )
    truncator._reader._llm = reader = PrefixReader(
        answers={
            "stable": ["Oslo", "Paris", "PARIS", "Paris"],  # Paris at 2 clues, the same (normalised) at 3: keep 2
            "unsure": ["Oslo", "Oslo", "Oslo", "Oslo"],  # never confident: the budget, 3
            "short": ["Rome"],  # one clue, confident: all clues
        },
        confidence={"stable": [0.9, 0.7, 0.8, 0.9], "unsure": [0.5] * 4, "short": [0.9]},
    )
    clues = [[Document(id=f"{q}{i}", content=f"clue {i}") for i in range(n)] for q, n in (("s", 4), ("u", 4), ("o", 1))]
    out = truncator.run_batch(query=["stable", "unsure", "short", "empty"], documents=[*clues, []])
    assert [len(d) for d in out["documents"]] == [2, 3, 1, 0]
    assert [t["stopped"] for t in out["trace"]] == ["stable", "budget", "all-clues", "no-clues"]
    assert out["trace"][0]["answers"] == ["Oslo", "Paris", "PARIS"]
    assert out["trace"][0]["confidences"] == pytest.approx([0.9, 0.7, 0.8])
    assert reader.calls == [3, 2, 2], "one LLM call a step for every undecided question, at most max_clues steps"


def test_truncator_settings_are_checked():
    with pytest.raises(ValueError, match="rule"):
        ClueTruncator(rule="longest")
    with pytest.raises(ValueError, match="min_clues"):
        ClueTruncator(rule="mass", min_clues=4, max_clues=3)
    with pytest.raises(ValueError, match="reader"):
        ClueTruncator(
            rule="stable", reader={"type": "reader", "init_parameters": {"llm": TINY_LLM, "max_documents": 0}}
        )
    with pytest.raises(ValueError, match="at least max_clues"):
        ClueTruncator(
            rule="stable",
            reader={"type": "reader", "init_parameters": {"llm": TINY_LLM, "max_documents": 5}},
            max_clues=10,
        )
    assert (
        ClueTruncator(
            rule="stable", reader={"type": "reader", "init_parameters": {"llm": TINY_LLM}}, max_clues=7
        )._reader.max_documents
        == 7
    )


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no benchmark data (set $HOPSTACK_DATA)")
def test_clues_from_real_multihop_rag_documents_reach_the_reader(monkeypatch):
    """The clue stages on real MultiHop-RAG articles with the real MiniLM and SmolLM2: every stage batched
    equals its single runs, clues are sentences of the documents, and the reader answers from them."""
    from hopstack.components.generation import AnswerGenerator
    from hopstack.datasets.benchmark import load_dataset
    from hopstack.index.formats import read_corpus

    monkeypatch.setenv("HOPSTACK_CACHE", "off")
    dataset = load_dataset("multihop-rag", limit=2)
    gold = {doc_id for question in dataset.questions for doc_id in question.gold_ids[:2]}
    articles = [a for a in read_corpus(dataset.corpus) if a.id in gold]
    docs = [Document(id=a.id, content=a.text[:1500], meta={"title": a.title}) for a in articles]
    extractor = ClueExtractor(top_m=5)
    reranker = ClueReranker(
        answerability={"type": "llm", "init_parameters": {"llm": TINY_LLM, "max_passage_words": 40}}
    )
    truncator = ClueTruncator(
        reader={"type": "reader", "init_parameters": {"llm": TINY_LLM, "max_tokens": 8}}, max_clues=3
    )
    queries = [q.question for q in dataset.questions]
    clues = extractor.run_batch(query=queries, documents=[docs, docs])["documents"]
    assert all(5 <= len(c) <= 10 for c in clues)
    squashed = ["".join(d.content.split()) for d in docs]  # blingfire turns line breaks inside a sentence into spaces
    assert all(any("".join(clue.content.split()) in text for text in squashed) for clue in clues[0])
    ranked = reranker.run_batch(query=queries, documents=clues)["documents"]
    assert all(0.0 <= c.meta["answerability"] <= 1.0 for c in ranked[0])
    kept = truncator.run_batch(query=queries, documents=ranked)
    assert all(1 <= len(k) <= 3 for k in kept["documents"])
    answers = AnswerGenerator(llm=TINY_LLM, max_tokens=8, cache=False).run_batch(queries, kept["documents"])
    for trace, [answer] in zip(kept["trace"], answers["answers"]):
        assert answer.data == trace["answers"][trace["kept"] - 1], "the truncator checked the reader's answer"
    for stage, inputs in ((extractor, {"documents": docs}), (reranker, {"documents": clues[0]})):
        assert_run_batch_matches_run(stage, [{"query": q, **inputs} for q in queries])


def test_extractive_qa_answerability_is_taken_as_the_probability_it_is(monkeypatch):
    class Probabilities(OddsScorer):
        def score(self, pairs):
            return np.array([0.9 if "answer" in p else 0.2 for _, p in pairs])

    monkeypatch.setitem(SHORT_NAMES, "extractive-qa", Probabilities)
    clues = [_clue("a", 1.0), _clue("b", 1.0, "the answer")]
    ranked = ClueReranker(answerability={"type": "extractive-qa", "init_parameters": {"model": "m"}}).run(
        query="q", documents=clues
    )
    assert [(d.id, d.meta["answerability"]) for d in ranked["documents"]] == [("b", 0.9), ("a", 0.2)]
