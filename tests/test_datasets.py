"""Benchmark loaders: every format on the real data, the shipped sample, splits, and bad input."""

import json
import re

import pytest

from conftest import REPO, SHARED_DATA
from hopstack.datasets.base import in_hash_train
from hopstack.datasets.benchmark import dataset_corpus, load_dataset, locate_dataset
from hopstack.datasets.questions import read_questions
from hopstack.datasets.registry import resolve_dataset
from hopstack.errors import HopstackInputError
from hopstack.index.formats import read_corpus

needs_data = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="no benchmark data (set $HOPSTACK_DATA)")
SAMPLE = REPO / "hopstack" / "data" / "sample"


# -- the real data ---------------------------------------------------------------------------------
@needs_data
def test_multihop_rag_questions_have_facts_answers_and_evidence_urls_as_gold_ids():
    data = load_dataset("multihop-rag")
    assert (data.name, data.format, len(data.questions)) == ("multihop-rag", "multihop-rag", 2255)
    assert data.corpus == SHARED_DATA / "multihop_rag" / "corpus.json"
    urls = {document.id for document in read_corpus(data.corpus)}
    first = data.questions[0]
    assert first.id == "q0000" and first.answers == ["Sam Bankman-Fried"] and first.question_type == "inference_query"
    assert all(q.facts and q.gold_ids and set(q.gold_ids) <= urls for q in data.questions)
    assert all(len(set(q.gold_ids)) == len(q.gold_ids) for q in data.questions)  # one id per article


@needs_data
@pytest.mark.parametrize("given", ["2wikimultihopqa", "2wikimultihopqa/", "2wikimultihopqa/2wiki_dev_subset.json"])
def test_2wiki_by_name_folder_or_file(given):
    name_or_path = given if given == "2wikimultihopqa" else str(SHARED_DATA / given)
    data = load_dataset(name_or_path)
    assert data.format == "hotpotqa" and len(data.questions) == 657
    assert data.corpus == data.source == SHARED_DATA / "2wikimultihopqa" / "2wiki_dev_subset.json"
    assert data.name == ("2wiki_dev_subset" if given.endswith(".json") else "2wikimultihopqa")
    first = data.questions[0]
    assert first.answers == ["2 February 1345"] and first.question_type == "compositional"
    assert first.gold_ids == ["Hermann II, Landgrave of Hesse", "Louis the Junker"]
    titles = {document.id for document in read_corpus(data.corpus)}  # one document per title, id = title
    assert all(set(q.gold_ids) <= titles for q in data.questions)
    assert {q.question_type for q in data.questions} == {
        "compositional",
        "bridge_comparison",
        "comparison",
        "inference",
    }


@needs_data
def test_scifact_uses_the_test_qrels_unless_a_qrels_file_is_given():
    data = load_dataset("scifact")
    assert (data.format, len(data.questions), data.source.name) == ("beir", 300, "test.tsv")
    assert data.questions[0].id == "1" and data.questions[0].gold_ids == ["31715818"]
    assert all(q.answers == [] and q.gold_ids for q in data.questions)
    train = load_dataset(str(SHARED_DATA / "scifact" / "qrels" / "train.tsv"))
    assert (train.name, len(train.questions), train.corpus) == ("scifact/train", 809, data.corpus)


@needs_data
@pytest.mark.parametrize("given", ["strategyqa", "strategyqa/", "strategyqa/strategyqa_train_subset_229.json"])
def test_strategyqa_by_name_folder_or_file(given):
    data = load_dataset(given if given == "strategyqa" else str(SHARED_DATA / given))
    assert (data.format, len(data.questions)) == ("strategyqa", 229)
    assert data.corpus == SHARED_DATA / "strategyqa" / "strategyqa_evidence_paragraphs_998.jsonl"
    first = data.questions[0]
    assert (first.id, first.answers) == ("e0044a7b4d146d611e73", ["no"])
    # every annotator's evidence, in first-seen order, the "operation" markers left out
    assert first.gold_ids == ["Albany, Georgia-1", "Albany, New York-2", "Albany, Georgia-35"]
    assert first.extra["decomposition"][0] == "What is the population of Albany, Georgia?"
    paragraphs = {document.id: document for document in read_corpus(data.corpus)}
    assert len(paragraphs) == 998 and paragraphs["Albany, Georgia-1"].title == "Albany, Georgia"
    assert all(q.gold_ids and set(q.gold_ids) <= set(paragraphs) for q in data.questions)
    assert {a for q in data.questions for a in q.answers} == {"yes", "no"}
    train, test = (load_dataset("strategyqa", split=split).questions for split in ("train", "test"))
    assert len(train) + len(test) == 229 and all(in_hash_train(q.id) for q in train)


def _strategyqa(tmp_path, records, paragraphs=({"paragraph_id": "P-1", "title": "P", "content": "text"},)):
    (tmp_path / "paragraphs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in paragraphs), encoding="utf-8")
    path = tmp_path / "questions.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_strategyqa_records_are_checked_by_index_and_qid(tmp_path):
    evidence = [[[["P-1"]], ["operation"]], [["no_evidence"]]]  # two annotators' steps
    record = {"qid": "a1", "question": "Q?", "answer": True, "evidence": evidence}
    good = load_dataset(str(_strategyqa(tmp_path, [record])))
    assert (good.questions[0].gold_ids, good.questions[0].answers) == (["P-1"], ["yes"])
    path = _strategyqa(tmp_path, [record, {**record, "qid": "b2", "evidence": [[["P-9"]]]}])
    assert _error(path) == f"{path}: record 1 (qid b2): evidence paragraph 'P-9' is not in the paragraphs file"
    path = _strategyqa(tmp_path, [{**record, "answer": "yes"}])
    assert _error(path) == f"{path}: record 0 (qid a1): 'answer' must be true or false, got 'yes'"
    path = _strategyqa(tmp_path, [record], paragraphs=({"paragraph_id": "P-1", "title": "P"},))
    assert "a StrategyQA paragraph line needs 'paragraph_id' and 'content'" in _error(path)
    (tmp_path / "paragraphs.jsonl").unlink()
    assert "needs exactly one evidence-paragraphs .jsonl beside it" in _error(path)


@needs_data
def test_every_form_names_its_corpus():
    assert dataset_corpus("multihop-rag").name == "corpus.json"
    assert dataset_corpus("2wikimultihopqa").name == "2wiki_dev_subset.json"
    assert (
        dataset_corpus(str(SHARED_DATA / "scifact" / "qrels" / "train.tsv")) == SHARED_DATA / "scifact" / "corpus.jsonl"
    )
    assert dataset_corpus(str(SAMPLE)) == SAMPLE / "corpus.jsonl"
    assert resolve_dataset("multihop-rag")[1] == SHARED_DATA / "multihop_rag"


def test_the_sample_is_a_generic_dataset_and_splits_then_limits():
    data = load_dataset(str(SAMPLE))
    assert (data.name, data.format, len(data.questions)) == ("sample", "generic", 66)
    first = data.questions[0]
    assert (first.id, first.gold_ids, first.answers, first.question_type) == (
        "q01",
        ["d01", "d02"],
        ["Hollin Ford"],
        "bridge",
    )
    assert "type" not in first.extra
    test = [q.id for q in data.questions if not in_hash_train(q.id)]
    assert [q.id for q in load_dataset(str(SAMPLE), "test", limit=3).questions] == test[:3]


def test_every_sample_answer_is_in_its_gold_documents():
    """The sample's labels hold together: each answer (but yes/no) is written in one of the question's gold
    documents, and a two-hop question (bridge, comparison) has a gold document per hop."""
    documents = {d.id: f"{d.title} {d.text}" for d in read_corpus(SAMPLE / "corpus.jsonl")}
    questions = load_dataset(str(SAMPLE)).questions
    assert {q.question_type for q in questions} == {"single", "bridge", "comparison", "paraphrase"}
    for q in questions:
        gold = " ".join(documents[g] for g in q.gold_ids)
        assert q.answers[0] in ("yes", "no") or any(a in gold for a in q.answers), q.id
        assert len(set(q.gold_ids)) == len(q.gold_ids) >= (2 if q.question_type in ("bridge", "comparison") else 1)


# -- bad input -------------------------------------------------------------------------------------
def _error(name_or_path) -> str:
    with pytest.raises(HopstackInputError) as caught:
        load_dataset(str(name_or_path))
    return str(caught.value)


def test_unknown_names_list_the_known_ones_and_unrecognised_folders_say_what_is_expected(tmp_path, monkeypatch):
    message = _error("nq")
    assert "unknown dataset 'nq'" in message and "multihop-rag, 2wikimultihopqa, scifact, strategyqa" in message
    assert "no dataset recognised" in _error(tmp_path) and "questions.jsonl + corpus.jsonl" in _error(tmp_path)
    monkeypatch.setenv("HOPSTACK_DATA", str(tmp_path))
    assert "not found at" in _error("scifact")


def _hotpot(tmp_path, records):
    path = tmp_path / "hotpot.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


HOTPOT_RECORD = {
    "_id": "abc",
    "question": "Q?",
    "answer": "A",
    "type": "bridge",
    "supporting_facts": [["T1", 0], ["T2", 0], ["T1", 1]],
    "context": [["T1", ["s0", "s1"]], ["T2", ["s0"]]],
}


def test_hotpotqa_records_are_checked_by_index_and_id(tmp_path):
    good = load_dataset(str(_hotpot(tmp_path, [HOTPOT_RECORD])))
    assert good.questions[0].gold_ids == ["T1", "T2"] and good.questions[0].question_type == "bridge"
    missing = {k: v for k, v in HOTPOT_RECORD.items() if k != "answer"}
    path = _hotpot(tmp_path, [HOTPOT_RECORD, missing])
    assert _error(path) == f"{path}: record 1 (_id abc): missing 'answer'"
    stray = {**HOTPOT_RECORD, "_id": "xyz", "supporting_facts": [["T3", 0]]}
    path = _hotpot(tmp_path, [HOTPOT_RECORD, HOTPOT_RECORD, stray])
    assert _error(path) == f"{path}: record 2 (_id xyz): supporting-fact title 'T3' is not in the question's context"


def _beir(tmp_path, qrels: str):
    (tmp_path / "qrels").mkdir(exist_ok=True)
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "One", "text": "one"}\n{"_id": "d2", "title": "Two", "text": "two"}\n', encoding="utf-8"
    )
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "first?"}\n{"_id": "q2", "text": "second?"}\n{"_id": "q3", "text": "third?"}\n',
        encoding="utf-8",
    )
    path = tmp_path / "qrels" / "test.tsv"
    path.write_text("query-id\tcorpus-id\tscore\n" + qrels, encoding="utf-8")
    return path


def test_beir_qrels_select_the_questions_and_unknown_ids_name_the_line(tmp_path):
    _beir(tmp_path, "q2\td2\t1\nq1\td1\t1\nq1\td2\t0\nq3\td1\t0\n")
    data = load_dataset(str(tmp_path))
    assert [(q.id, q.gold_ids) for q in data.questions] == [("q1", ["d1"]), ("q2", ["d2"])]  # q3: nothing relevant
    path = _beir(tmp_path, "q1\td1\t1\nq2\td9\t1\n")
    assert _error(tmp_path) == f"{path}:3: corpus id 'd9' is not in corpus.jsonl"
    path = _beir(tmp_path, "q1\td1\t1\nq7\td2\t1\n")
    assert _error(tmp_path) == f"{path}:3: query id 'q7' is not in queries.jsonl"
    path = _beir(tmp_path, "q1\td1\n")
    assert _error(path).startswith(f"{path}:2: expected 'query-id<TAB>corpus-id<TAB>score'")
    loose = tmp_path / "loose.tsv"
    loose.write_text("q1\td1\t1\n", encoding="utf-8")
    assert "must sit in the qrels/ folder of a BEIR dataset" in _error(loose)


def test_generic_questions_are_checked_against_the_corpus_by_line(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"id": "d1", "title": "One", "text": "one"}\n', encoding="utf-8")
    questions = tmp_path / "questions.jsonl"
    questions.write_text(
        '{"id": "a", "question": "ok?", "gold_ids": ["d1"]}\n'
        '{"id": "b", "question": "no?", "gold_ids": ["d1", "d5"]}\n',
        encoding="utf-8",
    )
    assert _error(tmp_path) == f"{questions}:2: gold id 'd5' is not in {tmp_path / 'corpus.jsonl'}"
    questions.write_text('{"id": "a", "gold_ids": ["d1"]}\n', encoding="utf-8")
    assert _error(tmp_path) == f"{questions}:1: 'question' must be a non-empty string"


def test_multihop_rag_records_without_a_query_are_named(tmp_path):
    (tmp_path / "corpus.json").write_text('[{"title": "t", "body": "b", "url": "u"}]', encoding="utf-8")
    (tmp_path / "MultiHopRAG.json").write_text(
        '[{"query": "q", "answer": "a", "evidence_list": []}, {"answer": "a"}]', encoding="utf-8"
    )
    assert re.fullmatch(r".*MultiHopRAG.json: record 1 lacks 'query' or 'evidence_list'", _error(tmp_path))
    assert locate_dataset(str(tmp_path)).format == "multihop-rag"


BAD_LINES = {
    "lone surrogate": ('{"question": "why \\ud800?"}', "holds a lone surrogate"),
    "top_k below 1": ('{"question": "q", "top_k": -5}', "'top_k' must be a whole number of at least 1, got -5"),
    "top_k zero": ('{"question": "q", "top_k": 0}', "'top_k' must be a whole number"),
    "top_k text": ('{"question": "q", "top_k": "x"}', "'top_k' must be a whole number of at least 1, got 'x'"),
    "nested 100,000 deep": ('{"question": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply to read"),
}


@pytest.mark.parametrize("name", BAD_LINES)
def test_a_bad_questions_line_is_refused_by_file_and_line(name, tmp_path):
    line, message = BAD_LINES[name]
    path = tmp_path / "questions.jsonl"
    path.write_text('{"question": "fine"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(HopstackInputError, match=f"{path}:2: .*{re.escape(message)}"):
        read_questions(path)


BAD_CORPORA = {
    "beir metadata a list": ("corpus.jsonl", '{"_id": "a", "text": "t", "metadata": [1]}', "beir", ":1: 'metadata'"),
    "beir metadata a string": ("corpus.jsonl", '{"_id": "a", "text": "t", "metadata": "x"}', "beir", ":1: 'metadata'"),
    "multihop-rag a number": ("corpus.json", "5", "multihop-rag", ": must be a JSON list of articles, got int"),
    "hotpotqa an object": ("corpus.json", '{"a": 1}', "hotpotqa", ": must be a JSON list of questions, got dict"),
    "lone surrogate": ("corpus.jsonl", '{"id": "a", "text": "\\udfff"}', "jsonl", ":1: holds a lone surrogate"),
}


@pytest.mark.parametrize("name", BAD_CORPORA)
def test_a_bad_corpus_is_refused_naming_the_file(name, tmp_path):
    file_name, content, corpus_format, message = BAD_CORPORA[name]
    path = tmp_path / file_name
    path.write_text(content + "\n", encoding="utf-8")
    with pytest.raises(HopstackInputError, match=re.escape(f"{path}{message}")):
        read_corpus(path, corpus_format)
