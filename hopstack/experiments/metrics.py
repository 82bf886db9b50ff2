"""Metrics that follow the benchmarks' own protocols exactly (docs/concepts/evaluation.md#metrics).

MultiHop-RAG's official retrieval metrics are restated here (tested against its script); document-level
IR measures come from ir-measures (pytrec_eval); answers are scored with SQuAD/HotpotQA's EM and F1. :func:`score_run`
applies whichever of them a dataset's labels allow.
"""

import functools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from haystack import Document

from hopstack.core.outputs import final_documents, predicted_answer
from hopstack.core.text import normalize_answer
from hopstack.datasets.base import BenchmarkDataset, BenchmarkQuestion, distinct
from hopstack.index.chunking import SentenceChunker, load_tokenizer


@functools.lru_cache(maxsize=1 << 16)  # the same chunks are squashed for every question and variant
def _squash(text: str) -> str:
    return text.replace(" ", "").replace("\n", "")


def matched_facts(text: str, facts: Sequence[str]) -> list[str]:
    """The evidence facts (spaces and newlines removed) that a chunk's text contains (spaces and newlines
    removed): MultiHop-RAG's rule for a relevant chunk."""
    chunk = _squash(text)
    return [g for g in map(_squash, facts) if g in chunk]


def is_gold(question: BenchmarkQuestion, document: Document, dataset_format: str) -> bool:
    """Whether a retrieved chunk is gold for a question, as the metrics judge it: a MultiHop-RAG chunk when
    it contains an evidence fact (:func:`matched_facts`), any other when its source document is a gold id."""
    if dataset_format == "multihop-rag":
        return bool(matched_facts(document.content or "", question.facts))
    return source_id(document) in question.gold_ids


def multihop_rag_query_metrics(retrieved: Sequence[str], facts: Sequence[str]) -> dict[str, float]:
    """MultiHop-RAG's Hits@10, Hits@4, MAP@10 and MRR@10 for one query, as its ``retrieval_evaluate.py``
    computes them.

    ``retrieved`` are the ranked chunk texts, ``facts`` the query's evidence facts. A chunk is relevant
    when some fact (spaces and newlines removed) is a substring of it (spaces and newlines removed).
    At each relevant rank r <= 10 the precision term is (facts first found at r) / r; MAP@10 divides their
    sum by min(#facts, 10).
    """
    gold = [_squash(f) for f in facts]
    found: set[str] = set()
    precision_sum = 0.0
    first_relevant = None
    hits4 = hits10 = False
    for rank, text in enumerate(retrieved[:10], start=1):
        matched = matched_facts(text, gold)
        if not matched:
            continue
        hits10 = True
        hits4 = hits4 or rank <= 4
        first_relevant = first_relevant or rank
        new = {g for g in matched if g not in found}
        # the official script counts each distinct fact string once, the first time it is found
        precision_sum += len(new) / rank
        found |= new
    return {
        "Hits@10": float(hits10),
        "Hits@4": float(hits4),
        "MAP@10": precision_sum / min(len(gold), 10) if gold else 0.0,
        "MRR@10": 1.0 / first_relevant if first_relevant else 0.0,
    }


def mean_metrics(per_query: Sequence[dict[str, float]]) -> dict[str, float]:
    """The mean of each metric over queries."""
    if not per_query:
        return {}
    return {key: sum(m[key] for m in per_query) / len(per_query) for key in per_query[0]}


# -- every benchmark -------------------------------------------------------------------------------

CUTOFFS = (2, 5, 10)
DOCUMENT_METRICS = (
    *(f"AllGold@{k}" for k in CUTOFFS),
    *(f"AnyGold@{k}" for k in CUTOFFS),
    "Recall@10",
    "MRR@10",
    "nDCG@10",
)
ANSWER_METRICS = ("EM", "F1", "Acc")


def _ir_measures() -> dict[str, Any]:
    """Our metric names (``recall@k`` feeds AllGold@k and Recall@10) -> ir-measures measures."""
    from ir_measures import RR, R, Success, nDCG

    return {
        **{f"recall@{k}": R @ k for k in CUTOFFS},
        **{f"AnyGold@{k}": Success @ k for k in CUTOFFS},
        "MRR@10": RR @ 10,
        "nDCG@10": nDCG @ 10,
    }


_YES_NO = ("yes", "no", "noanswer")


@dataclass
class ScoredRun:
    """A pipeline's scores on a benchmark, per question and averaged."""

    question_ids: list[str]  # the questions scored, in dataset order
    per_query: dict[str, list[float]]  # metric name -> one value per question in question_ids
    means: dict[str, float]
    warnings: list[str]


def _f1(prediction: str, gold: str) -> float:
    """HotpotQA's token F1 of two normalised answers: 0 when either is yes/no/noanswer and they differ."""
    if (prediction in _YES_NO or gold in _YES_NO) and prediction != gold:
        return 0.0
    predicted, expected = prediction.split(), gold.split()
    same = sum((Counter(predicted) & Counter(expected)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(expected)
    return 2 * precision * recall / (precision + recall)


def answer_scores(prediction: str, answers: Sequence[str]) -> dict[str, float]:
    """EM, F1 and Acc of one predicted answer, each the best over the gold ``answers``, after
    :func:`normalize_answer`. Acc: the gold answer occurs in the prediction as whole words. A prediction
    that normalises to nothing scores 0."""
    prediction = normalize_answer(prediction)
    best = dict.fromkeys(ANSWER_METRICS, 0.0)
    if not prediction:
        return best
    for answer in answers:
        gold = normalize_answer(answer)
        best["EM"] = max(best["EM"], float(prediction == gold))
        best["F1"] = max(best["F1"], _f1(prediction, gold))
        best["Acc"] = max(best["Acc"], float(bool(gold) and f" {gold} " in f" {prediction} "))
    return best


def source_id(document: Document) -> str:
    """The source-document id of a retrieved chunk: ``meta["doc_id"]``, else the document id."""
    return str(document.meta.get("doc_id", document.id))


def source_ids(documents: Sequence[Document]) -> list[str]:
    """The ranked source-document ids of retrieved chunks (:func:`source_id`); a document retrieved through
    several chunks counts once, at its first rank."""
    return distinct([source_id(d) for d in documents])


def document_metrics(ranked: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, list[float]]:
    """Per question: AllGold@k (every gold document in the top k), AnyGold@k (some gold document in the
    top k) for k = 2, 5, 10, Recall@10, MRR@10 and nDCG@10 of ranked document ids against gold ids,
    computed with ir-measures (pytrec_eval; binary relevance). A question with nothing retrieved or no
    gold ids scores 0."""
    import ir_measures

    values = {key: [0.0] * len(ranked) for key in DOCUMENT_METRICS}
    scored = [i for i in range(len(ranked)) if ranked[i] and gold[i]]
    # query ids are positions, so repeated question ids cannot collide; scores fall with the rank
    qrels = {str(i): dict.fromkeys(gold[i], 1) for i in scored}
    run = {str(i): {doc: float(len(ranked[i]) - rank) for rank, doc in enumerate(ranked[i])} for i in scored}
    for name, measure in _ir_measures().items():  # one measure a call: results need no lookup by measure
        for metric in ir_measures.iter_calc([measure], qrels, run):
            i = int(metric.query_id)
            if name.startswith("recall@"):
                k = name.split("@")[1]
                values[f"AllGold@{k}"][i] = float(metric.value == 1.0)
                if k == "10":
                    values["Recall@10"][i] = float(metric.value)
            else:
                values[name][i] = float(metric.value)
    return values


_TOKEN_COUNTS: dict[str, int] = {}  # text -> tokens; the same chunks come back in every variant's results


def context_tokens(documents: Sequence[Sequence[Document]]) -> list[float]:
    """Per question, the tokens of its documents' text, counted with the chunker's (default) tokenizer."""
    texts = distinct([d.content or "" for docs in documents for d in docs if (d.content or "") not in _TOKEN_COUNTS])
    if texts:
        tokenizer = load_tokenizer(SentenceChunker().tokenizer)
        encoded = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
        _TOKEN_COUNTS.update((text, len(ids)) for text, ids in zip(texts, encoded))
    return [float(sum(_TOKEN_COUNTS[d.content or ""] for d in docs)) for docs in documents]


def _few(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:5])
    return f"{len(ids)} question(s): {shown}{', ...' if len(ids) > 5 else ''}"


def _all_labelled(questions: Sequence[BenchmarkQuestion], label: str, metrics: str, notes: list[str]) -> bool:
    """Whether every question has ``label``; when only some do, a note says why ``metrics`` are left out."""
    missing = [q.id for q in questions if not getattr(q, label)]
    if missing and len(missing) < len(questions):
        notes.append(f"{metrics} left out: no {label} for {_few(missing)}")
    return not missing


def score_run(dataset: BenchmarkDataset, outputs: Sequence[dict[str, dict[str, Any]]]) -> ScoredRun:
    """Score a pipeline's outputs (``outputs[i]`` for ``dataset.questions[i]``, as BatchRunner returns them)
    with the dataset's metrics.

    - MultiHop-RAG: its official Hits@10, Hits@4, MAP@10 and MRR@10 over chunk texts
      (:func:`multihop_rag_query_metrics`); the document-level MRR@10 below is named ``DocMRR@10`` there.
    - every dataset whose questions have gold ids: :func:`document_metrics` over the final documents.
    - when the questions have answers and the pipeline gives one: EM, F1 and Acc (:func:`answer_scores`);
      questions without an answer score 0 and are named in a warning.
    - ``context_tokens``: tokens of the documents the reader saw (else of the final documents).
    """
    questions = dataset.questions
    if len(outputs) != len(questions):
        raise ValueError(f"{len(outputs)} outputs for {len(questions)} questions")
    if not questions:
        return ScoredRun([], {}, {}, [])
    notes: list[str] = []
    per_query: dict[str, list[float]] = {}
    documents = [final_documents(o) for o in outputs]
    if dataset.format == "multihop-rag":
        official = [
            multihop_rag_query_metrics([d.content or "" for d in docs], q.facts)
            for q, docs in zip(questions, documents)
        ]
        per_query.update({key: [m[key] for m in official] for key in official[0]})
    if _all_labelled(questions, "gold_ids", "document metrics", notes):
        ranked = document_metrics([source_ids(docs) for docs in documents], [q.gold_ids for q in questions])
        rename = {"MRR@10": "DocMRR@10"} if dataset.format == "multihop-rag" else {}
        per_query.update({rename.get(key, key): values for key, values in ranked.items()})
    predictions = [predicted_answer(o) for o in outputs]
    if any(p is not None for p in predictions) and _all_labelled(questions, "answers", "answer metrics", notes):
        texts = [p[0] if p is not None else "" for p in predictions]
        answered = [answer_scores(text, q.answers) for text, q in zip(texts, questions)]
        per_query.update({key: [a[key] for a in answered] for key in ANSWER_METRICS})
        empty = [q.id for text, q in zip(texts, questions) if not normalize_answer(text)]
        if empty:
            notes.append(f"no answer (empty after normalisation), scored 0, for {_few(empty)}")
    reader = [p[1] if p is not None and p[1] else docs for p, docs in zip(predictions, documents)]
    per_query["context_tokens"] = context_tokens(reader)
    means = {key: sum(values) / len(values) for key, values in per_query.items()}
    return ScoredRun([q.id for q in questions], per_query, means, notes)
