"""REBEL multi-criteria reranking (LeVine & Varjavand 2025; METHODS section 1), small-model mode.

REBEL ranks by relevance *and* secondary criteria of document quality, because relevance alone
loses answer quality. The paper's LLM writes "Doc: i, Relevance: final" lines with the arithmetic done
in its head; a 0.5B model cannot, so in this mode (METHODS 1.7) the arithmetic moves to Python:

1. Criteria: one-turn uses REBEL's fixed five (depth, diversity, clarity, authoritativeness, recency);
   two-turn asks the LLM for at most three query-specific criteria as JSON
   (``[{"name", "definition", "weight"}]``), validated, falling back to the fixed five.
2. Every (question, document) pair is scored pointwise: relevance 0-10 and each criterion 0-5, each
   the expected grade over the grade tokens' probabilities (:class:`~hopstack.models.scorers.LLMGradedScorer`).
3. Final = relevance + sum_i w_i * criterion_i (w_i = 0.5 in one-turn); documents with relevance below
   ``relevance_threshold`` (3) are left out, as REBEL does, or put after the others with
   ``keep_below_threshold``; ties go to the higher authoritativeness (one-turn), then first-stage order.
"""

import json
import re
from typing import Any

import numpy as np
from haystack import Document, component

from hopstack.components.base import BatchComponent
from hopstack.components.rerankers import candidate_top_ks, passage_text
from hopstack.components.retrieval import _with_score
from hopstack.models.cache import LLMUser
from hopstack.models.scorers import LLMGradedScorer

# REBEL's one-turn criteria (METHODS 1.2): name, what it measures, the 5 and the 0 anchors.
FIXED_CRITERIA = [
    {
        "name": "Depth of Content",
        "definition": "5 = exceptionally in-depth, covers multiple facets; 0 = very superficial",
    },
    {"name": "Diversity of Perspectives", "definition": "5 = many viewpoints or sources; 0 = entirely one-sided"},
    {"name": "Clarity and Specificity", "definition": "5 = highly specific and clear; 0 = vague or overly general"},
    {
        "name": "Authoritativeness",
        "definition": "5 = extensively cited academic work or official standard; 0 = unknown or dubious source",
    },
    {"name": "Recency", "definition": "5 = very current; 0 = outdated or no time-sensitive information"},
]
FIXED_WEIGHT = 0.5
TIE_BREAK_CRITERION = "Authoritativeness"

RELEVANCE_PROMPT = (
    "Query: {query}\n\nDocument: {passage}\n\n"
    "Rate the document's relevance to the query from 0 to {scale} "
    "({scale} = directly and comprehensively addresses the query; 0 = off-topic). Answer with the number only."
)
CRITERION_PROMPT = (
    "Query: {{query}}\n\nDocument: {{passage}}\n\n"
    "Rate the document's {name} from 0 to {{scale}} ({definition}). Answer with one digit."
)
CRITERIA_PROMPT = (
    "A search engine must rerank documents for this query:\n{query}\n\n"
    "Besides relevance, which properties of a document would make it most useful for answering this query "
    "(for example recency, authoritativeness, depth, specificity, diversity of perspectives, technical "
    'accuracy)? Give at most 3, as a JSON list of objects with the keys "name", "definition" '
    '(what a score of 5 and of 0 mean) and "weight" (between 0 and 1). Answer with the JSON only.'
)
MAX_INFERRED_CRITERIA = 3


def parse_criteria(text: str) -> list[dict[str, Any]] | None:
    """The criteria in an LLM's two-turn answer: the first JSON list in it, each item with a non-empty
    string ``name``, a string ``definition`` and a numeric ``weight`` clipped to [0, 1]; at most three,
    names de-duplicated (case-folded). ``None`` when no usable criterion is found."""
    match = re.search(r"\[.*\]", text, re.DOTALL)
    if not match:
        return None
    try:
        items = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    criteria, seen = [], set()
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        name, definition, weight = item.get("name"), item.get("definition", ""), item.get("weight", FIXED_WEIGHT)
        if not isinstance(name, str) or not name.strip() or name.strip().casefold() in seen:
            continue
        if not isinstance(definition, str) or isinstance(weight, bool) or not isinstance(weight, int | float):
            continue
        seen.add(name.strip().casefold())
        criteria.append(
            {"name": name.strip(), "definition": definition.strip(), "weight": float(min(max(weight, 0.0), 1.0))}
        )
    return criteria[:MAX_INFERRED_CRITERIA] or None


@component
class REBELReranker(LLMUser, BatchComponent):
    """REBEL multi-criteria reranking, small-model mode (see the module docstring): relevance and
    secondary criteria scored pointwise from grade-token probabilities, the weighted sum, threshold and
    ordering done in Python. Labelled a REBEL-style small-model approximation.

    :param llm: an LLM spec (:func:`hopstack.models.llm.make_llm`).
    :param two_turn: infer the criteria from the query (two-turn REBEL) instead of the fixed five.
    :param relevance_threshold: documents whose relevance (0-10) is below it are left out (REBEL: 3).
    :param keep_below_threshold: put them after the others instead of leaving them out.
    :param top_k: documents returned unless the ``top_k`` input overrides it (REBEL's experiments: 3).
    :param max_passage_words: words kept of each passage in a prompt.
    :param title_prefix: passages are ``"title. text"`` when a document has a title.
    :param cache: use the on-disk call cache (``HOPSTACK_CACHE=off`` overrides).

    Outputs ``documents`` (scored by their final score) and ``rebel``, per question: the ``criteria``
    used (name, definition, weight), ``criteria_source`` (``fixed``, ``llm`` or ``fallback`` when the
    two-turn answer had no usable criterion), and ``below_threshold`` (how many documents fell below).
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        two_turn: bool = False,
        relevance_threshold: float = 3.0,
        keep_below_threshold: bool = False,
        top_k: int = 10,
        max_passage_words: int = 100,
        title_prefix: bool = True,
        cache: bool = True,
    ):
        if top_k < 1 or max_passage_words < 1:
            raise ValueError(f"top_k and max_passage_words must be at least 1, got {top_k} and {max_passage_words}")
        self.use_llm(llm, cache)
        self.two_turn = two_turn
        self.relevance_threshold = relevance_threshold
        self.keep_below_threshold = keep_below_threshold
        self.top_k = top_k
        self.max_passage_words = max_passage_words
        self.title_prefix = title_prefix

    def _grader(self, prompt: str, scale: int) -> LLMGradedScorer:
        return LLMGradedScorer(self.llm, prompt, scale, self.max_passage_words, self.cache)

    @component.output_types(documents=list[Document], rebel=dict[str, Any])
    def run(self, query: str, documents: list[Document], top_k: int | None = None) -> dict[str, Any]:
        """Rerank one question's candidates."""
        return self.run_single(query=query, documents=documents, top_k=top_k)

    def run_batch(
        self, query: list[str], documents: list[list[Document]], top_k: list[int | None] | None = None
    ) -> dict[str, list[Any]]:
        """Rerank a batch: the criteria of every question in one LLM call (two-turn), then the relevance
        and each criterion of every (question, document) pair in one scoring call each."""
        self.warm_up()
        ks = candidate_top_ks(query, documents, top_k, self.top_k)
        criteria, sources = self.criteria(query)
        pairs = [(q, passage_text(d, self.title_prefix)) for q, docs in zip(query, documents) for d in docs]
        relevance = self._grader(RELEVANCE_PROMPT, 10).score(pairs).astype(np.float64)
        owner = np.repeat(np.arange(len(query)), [len(docs) for docs in documents])
        final, tie_break = relevance.copy(), np.zeros(len(pairs))
        for name, definition in sorted({(c["name"], c["definition"]) for cs in criteria for c in cs}):
            asked = [i for i, o in enumerate(owner) if any(_is(c, name, definition) for c in criteria[o])]
            prompt = CRITERION_PROMPT.format(name=_literal(name), definition=_literal(definition))
            values = self._grader(prompt, 5).score([pairs[i] for i in asked]).astype(np.float64)
            for i, value in zip(asked, values):
                weight = next(c["weight"] for c in criteria[owner[i]] if _is(c, name, definition))
                final[i] += weight * value
                if name == TIE_BREAK_CRITERION:
                    tie_break[i] = value
        reranked, traces, offset = [], [], 0
        for docs, k, question_criteria, source in zip(documents, ks, criteria, sources):
            rows = slice(offset, offset + len(docs))
            offset += len(docs)
            order, below = self._order(relevance[rows], final[rows], tie_break[rows])
            reranked.append([_with_score(docs[i], float(final[rows][i])) for i in order[:k]])
            traces.append({"criteria": question_criteria, "criteria_source": source, "below_threshold": below})
        return {"documents": reranked, "rebel": traces}

    def criteria(self, queries: list[str]) -> tuple[list[list[dict[str, Any]]], list[str]]:
        """Each question's criteria and where they came from (``fixed``, ``llm`` or ``fallback``)."""
        fixed = [{**c, "weight": FIXED_WEIGHT} for c in FIXED_CRITERIA]
        if not self.two_turn:
            return [fixed] * len(queries), ["fixed"] * len(queries)
        prompts = [[{"role": "user", "content": CRITERIA_PROMPT.format(query=q)}] for q in queries]
        answers = self._llm.generate(prompts, max_tokens=200)
        parsed = [parse_criteria(answer) for answer in answers]
        return [p or fixed for p in parsed], ["llm" if p else "fallback" for p in parsed]

    def _order(self, relevance: np.ndarray, final: np.ndarray, tie_break: np.ndarray) -> tuple[list[int], int]:
        """Candidate positions best first (final, then the tie-break criterion, then input order), those
        below the relevance threshold left out or put last; and how many fell below it."""
        below = relevance < self.relevance_threshold
        order = np.lexsort((np.arange(len(final)), -tie_break, -final, below)).tolist()
        kept = order if self.keep_below_threshold else [i for i in order if not below[i]]
        return kept, int(below.sum())


def _literal(text: str) -> str:
    """``text`` safe inside a prompt template that is formatted again later (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


def _is(criterion: dict[str, Any], name: str, definition: str) -> bool:
    return criterion["name"] == name and criterion["definition"] == definition
