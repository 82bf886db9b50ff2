"""REBEL multi-criteria reranking (LeVine & Varjavand 2025; docs/methods/rebel.md).

REBEL ranks by relevance *and* secondary criteria of document quality, because relevance alone
loses answer quality. Two modes:

**faithful** (docs/methods/rebel.md#faithful): the LLM reads a batch of up to ten documents in one prompt (one-turn:
the fixed prompt; two-turn: a prompt the LLM first writes from the query with the meta-prompt) and answers
"Doc: i, Relevance: final" lines, doing the arithmetic itself. Prompts are reconstructed
(:mod:`hopstack.components.rebel_prompts`). The answer is parsed robustly (docs/methods/rebel.md#faithful): floats, ids
checked to be in the batch, a line's id and score parsed together. An LLM-written prompt without both placeholders
falls back to the one-turn prompt. Fallback order: documents the answer leaves out were judged below the
threshold by REBEL and are left out (or put last, in first-stage order, with ``keep_below_threshold``); a
batch whose answer has no usable line at all keeps its first-stage order after the scored documents.
Repeated ids keep their first score; every case is counted in the ``trace`` output.

**small-model** (docs/methods/rebel.md#small-model): a 0.5B model cannot do the arithmetic, so it moves to Python:

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

from hopstack.components.rebel_prompts import META_PROMPT, ONE_TURN_PROMPT, fill, usable_prompt
from hopstack.components.rerankers import TracedReranker
from hopstack.core.ranking import candidate_top_ks, with_score
from hopstack.core.text import passage_text, prompt_passages
from hopstack.models.cache import LLMUser
from hopstack.models.scorers import LLMGradedScorer

# REBEL's one-turn criteria (docs/methods/rebel.md#method): name, what it measures, the 5 and the 0 anchors.
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
MODES = ("small-model", "faithful")
PARSE_COUNTS = ("out_of_range", "repeated", "unparsed_lines")
# "Doc: 3, Relevance: 12.5" and its common variants ("Document [3]", "Relevance = 12.5")
CHOICE_LINE = re.compile(
    r"doc(?:ument)?\s*(?:#|no\.?)?\s*:?\s*\[?\s*(-?\d+)\s*\]?\s*[,;]\s*relevance(?:\s+score)?\s*[:=]?\s*\[?\s*"
    r"(-?\d+(?:\.\d+)?)",
    re.IGNORECASE,
)


def parse_choices(text: str, n: int) -> tuple[dict[int, float], dict[str, int]]:
    """The "Doc: i, Relevance: s" lines of a faithful-mode answer for a batch of ``n`` documents: 0-based
    position -> score (each line's id and score parsed together, floats kept), and the counts of
    ``out_of_range`` ids (not 1..n), ``repeated`` ids (the first score is kept) and ``unparsed_lines``
    (non-empty lines without such a pair)."""
    scores: dict[int, float] = {}
    counts = dict.fromkeys(PARSE_COUNTS, 0)
    for line in text.splitlines():
        match = CHOICE_LINE.search(line)
        if not match:
            counts["unparsed_lines"] += bool(line.strip())
            continue
        position = int(match.group(1)) - 1
        if not 0 <= position < n:
            counts["out_of_range"] += 1
        elif position in scores:
            counts["repeated"] += 1
        else:
            scores[position] = float(match.group(2))
    return scores, counts


def parse_criteria(text: str) -> list[dict[str, Any]] | None:
    """The criteria in an LLM's two-turn answer: the JSON objects after its first ``[`` (each parsed on its
    own, so an answer cut off mid-list keeps its complete objects), each with a non-empty string ``name``
    other than relevance (scored anyway), a ``definition`` (a number or other scalar is kept as text) and a
    numeric ``weight`` clipped to [0, 1] (0.5 when absent); at most three, names de-duplicated
    (case-folded). ``None`` when no usable criterion is found."""
    if "[" not in text:
        return None
    criteria, seen = [], {"relevance"}
    for chunk in re.findall(r"\{[^{}]*\}", text[text.index("[") :]):
        try:
            item = json.loads(chunk)
        except json.JSONDecodeError:
            continue
        name, definition, weight = item.get("name"), item.get("definition", ""), item.get("weight", FIXED_WEIGHT)
        if not isinstance(name, str) or not name.strip() or name.strip().casefold() in seen:
            continue
        if isinstance(definition, dict | list) or isinstance(weight, bool) or not isinstance(weight, int | float):
            continue
        seen.add(name.strip().casefold())
        definition = "" if definition is None else str(definition).strip()
        criteria.append({"name": name.strip(), "definition": definition, "weight": float(min(max(weight, 0.0), 1.0))})
    return criteria[:MAX_INFERRED_CRITERIA] or None


@component
class REBELReranker(LLMUser, TracedReranker):
    """REBEL multi-criteria reranking (see the module docstring), ``faithful`` or ``small-model`` mode.
    Small-model runs are a REBEL-style small-model approximation; faithful runs use reconstructed prompts.

    :param llm: an LLM spec (:func:`hopstack.models.llm.make_llm`).
    :param mode: ``small-model`` (pointwise grades, arithmetic in Python) or ``faithful`` (the LLM ranks
        a batch of documents in one answer).
    :param two_turn: infer the criteria from the query (two-turn REBEL) instead of the fixed five.
    :param relevance_threshold: small-model: documents whose relevance (0-10) is below it are left out
        (REBEL: 3). Faithful mode leaves the threshold to the LLM (the prompt asks for it).
    :param keep_below_threshold: put left-out documents last (first-stage order) instead of dropping them.
    :param choice_batch_size: faithful: documents per prompt (REBEL: 10).
    :param max_tokens: faithful: tokens of each ranking answer; the written prompt gets four times this.
    :param top_k: documents returned unless the ``top_k`` input overrides it (REBEL's experiments: 3).
    :param max_passage_words: words kept of each passage in a prompt.
    :param title_prefix: passages are ``"title. text"`` when a document has a title.
    :param cache: use the on-disk call cache (``HOPSTACK_CACHE=off`` overrides).

    Outputs ``documents`` (scored by their final score; documents kept without one carry negative scores
    in their fallback order) and ``trace``, per question: ``mode``, ``llm_prompts``, and either the
    ``criteria`` used with ``criteria_source`` (``fixed``, ``llm``, or ``fallback`` when the two-turn answer
    had no usable criterion) and ``below_threshold`` (small-model), or ``prompt_source`` (``fixed``,
    ``llm``, ``fallback``), ``scored``, ``omitted``, ``out_of_range``, ``repeated``, ``unparsed_lines`` and
    ``fallback_batches`` (faithful).
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        mode: str = "small-model",
        two_turn: bool = False,
        relevance_threshold: float = 3.0,
        keep_below_threshold: bool = False,
        choice_batch_size: int = 10,
        max_tokens: int = 256,
        top_k: int = 10,
        max_passage_words: int = 100,
        title_prefix: bool = True,
        cache: bool = True,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if min(top_k, max_passage_words, choice_batch_size, max_tokens) < 1:
            raise ValueError("top_k, max_passage_words, choice_batch_size and max_tokens must be at least 1")
        self.use_llm(llm, cache)
        self.mode = mode
        self.two_turn = two_turn
        self.relevance_threshold = relevance_threshold
        self.keep_below_threshold = keep_below_threshold
        self.choice_batch_size = choice_batch_size
        self.max_tokens = max_tokens
        self.top_k = top_k
        self.max_passage_words = max_passage_words
        self.title_prefix = title_prefix
        self._graders: dict[tuple[str, int], LLMGradedScorer] = {}

    def _grader(self, prompt: str, scale: int) -> LLMGradedScorer:
        """The graded scorer of ``prompt`` on 0..``scale``, made once per component."""
        if (prompt, scale) not in self._graders:
            self._graders[prompt, scale] = LLMGradedScorer(self.llm, prompt, scale, self.max_passage_words, self.cache)
        return self._graders[prompt, scale]

    def run_batch(
        self, query: list[str], documents: list[list[Document]], top_k: list[int | None] | None = None
    ) -> dict[str, list[Any]]:
        """Rerank a batch; every LLM call of a step covers every question of the batch."""
        self.warm_up()
        ks = candidate_top_ks(query, documents, top_k, self.top_k)
        if self.mode == "faithful":
            return self._run_faithful(query, documents, ks)
        return self._run_small_model(query, documents, ks)

    def _run_small_model(self, query: list[str], documents: list[list[Document]], ks: list[int]) -> dict[str, list]:
        """The criteria of every question in one LLM call (two-turn), then the relevance and each
        criterion of every (question, document) pair in one scoring call each."""
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
            reranked.append([with_score(docs[i], float(final[rows][i])) for i in order[:k]])
            traces.append(
                {
                    "mode": self.mode,
                    "criteria": question_criteria,
                    "criteria_source": source,
                    "below_threshold": below,
                    "llm_prompts": int(self.two_turn) + len(docs) * (1 + len(question_criteria)),
                }
            )
        return {"documents": reranked, "trace": traces}

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

    def ranking_prompts(self, queries: list[str]) -> tuple[list[str], list[str]]:
        """Faithful mode: each question's ranking prompt and where it came from (``fixed``; ``llm`` when
        the two-turn LLM wrote a usable one; ``fallback`` to the one-turn prompt when it did not)."""
        if not self.two_turn:
            return [ONE_TURN_PROMPT] * len(queries), ["fixed"] * len(queries)
        requests = [[{"role": "user", "content": fill(META_PROMPT, user_query=q)}] for q in queries]
        written = [usable_prompt(text) for text in self._llm.generate(requests, max_tokens=4 * self.max_tokens)]
        return [w or ONE_TURN_PROMPT for w in written], ["llm" if w else "fallback" for w in written]

    def _run_faithful(self, query: list[str], documents: list[list[Document]], ks: list[int]) -> dict[str, list]:
        """The ranking prompts of every question (one call, two-turn), then every batch of every question
        in one generation call; answers parsed with :func:`parse_choices`."""
        templates, sources = self.ranking_prompts(query)
        jobs, prompts = [], []
        for i, (q, docs) in enumerate(zip(query, documents)):
            for start in range(0, len(docs), self.choice_batch_size):
                batch = docs[start : start + self.choice_batch_size]
                passages = prompt_passages(batch, self.title_prefix, self.max_passage_words)
                context = "\n\n".join(f"Document {j}:\n{p}" for j, p in enumerate(passages, 1))
                jobs.append((i, start, len(batch)))
                prompts.append([{"role": "user", "content": fill(templates[i], context_str=context, query_str=q)}])
        answers = self._llm.generate(prompts, max_tokens=self.max_tokens) if prompts else []
        counted = {"llm_prompts": int(self.two_turn), "fallback_batches": 0, **dict.fromkeys(PARSE_COUNTS, 0)}
        traces = [{"mode": self.mode, "prompt_source": source, **counted} for source in sources]
        scored: list[dict[int, float]] = [{} for _ in query]
        unscored: list[list[int]] = [[] for _ in query]  # batches that fell back, in first-stage order
        for (i, start, size), answer in zip(jobs, answers):
            scores, counts = parse_choices(answer, size)
            trace = traces[i]
            trace["llm_prompts"] += 1
            for name, count in counts.items():
                trace[name] += count
            if not scores:
                trace["fallback_batches"] += 1
                unscored[i].extend(range(start, start + size))
            scored[i].update({start + j: s for j, s in scores.items()})
        reranked = []
        for docs, k, scores, fallback, trace in zip(documents, ks, scored, unscored, traces):
            omitted = [j for j in range(len(docs)) if j not in scores and j not in fallback]
            trace.update(scored=len(scores), omitted=len(omitted))
            ranked = sorted(scores, key=lambda j: (-scores[j], j))
            kept = [*fallback, *(omitted if self.keep_below_threshold else [])]
            out = [with_score(docs[j], scores[j]) for j in ranked]
            out += [with_score(docs[j], -1.0 - n) for n, j in enumerate(kept)]
            reranked.append(out[:k])
        return {"documents": reranked, "trace": traces}


def _literal(text: str) -> str:
    """``text`` safe inside a prompt template that is formatted again later (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


def _is(criterion: dict[str, Any], name: str, definition: str) -> bool:
    return criterion["name"] == name and criterion["definition"] == definition
