"""What a pipeline returns for one question (hopstack.core.outputs): the answer, its sources, and whether
they support it."""

import pytest
from haystack import Document
from haystack.dataclasses import GeneratedAnswer

from hopstack.core.outputs import MIN_CONFIDENCE, pipeline_output, supporting_ids

DOCUMENTS = [
    Document(id="a", content="Ada Brannock founded the mill."),
    Document(id="b", content="The Brannocks sold it."),
    Document(id="c", content="ADA BRANNOCK, founder"),
]


def test_supporting_documents_contain_the_answer_as_whole_words():
    assert supporting_ids("Ada Brannock", DOCUMENTS) == ["a", "c"]
    assert supporting_ids("Brannock", DOCUMENTS) == ["a", "c"], "whole words: not 'Brannocks'"
    assert supporting_ids("Yes", DOCUMENTS) == [] and supporting_ids("", DOCUMENTS) == []
    titled = Document(id="t", content="It was founded in 1820.", meta={"title": "Ada Brannock"})
    assert supporting_ids("Ada Brannock", [titled]) == ["t"], "the title is part of what the reader reads"


def read(text: str, confidence: float | None, documents: list[Document]):
    meta = {} if confidence is None else {"confidence": confidence}
    answer = GeneratedAnswer(data=text, query="Who founded the mill?", documents=documents, meta=meta)
    return pipeline_output({"reader": {"answers": [answer]}})


@pytest.mark.parametrize(
    ("text", "confidence", "documents", "because"),
    [
        ("the Ada Brannock.", 0.9, DOCUMENTS, []),  # normalised: case, articles and punctuation do not count
        ("Ada Brannock", None, DOCUMENTS, []),  # a reader without a confidence is judged by its sources
        ("Ada Brannock", MIN_CONFIDENCE - 0.01, DOCUMENTS, [f"confidence 0.49 is below {MIN_CONFIDENCE:g}"]),
        ("Edda Varrow", 0.94, DOCUMENTS, ["no source contains the answer"]),
        ("Ada Brannock", 0.9, DOCUMENTS[1:2], ["no source contains the answer"]),
        ("Edda", 0.2, DOCUMENTS, ["confidence 0.20 is below 0.5", "no source contains the answer"]),
        ("Yes", 0.9, DOCUMENTS, []),  # a judgement, not a span: its confidence alone decides
        ("No", 0.3, DOCUMENTS, ["confidence 0.30 is below 0.5"]),
        (" . ", 0.9, DOCUMENTS, ["the answer is empty"]),
    ],
)
def test_an_answer_is_supported_when_confident_and_found_in_a_source(text, confidence, documents, because):
    output = read(text, confidence, documents)
    assert output.unsupported_because == because and output.supported is (not because)


def test_sources_are_the_documents_read_else_those_returned_and_no_answer_is_neither():
    replies = pipeline_output({"generator": {"replies": ["Ada Brannock"]}, "fuse": {"documents": DOCUMENTS[:1]}})
    assert replies.sources == DOCUMENTS[:1] and replies.supported is True
    retrieval = pipeline_output({"bm25": {"documents": DOCUMENTS}})
    assert retrieval.supported is None and retrieval.unsupported_because == []
