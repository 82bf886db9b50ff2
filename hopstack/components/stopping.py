"""Natural-logic stopping of iterative retrieval (AdMIRaL, ProoFVer's DFA, QA-NatVer; docs/methods/natural-logic.md).

A proof is a sequence of (claim span, evidence span, operator) steps over the MacCartney-Manning operators
``= < > ! | #``; :func:`natlog_verdict` runs the operators through ProoFVer's DFA (docs/methods/natural-logic.md#dfa) to
SUPPORTS, REFUTES or NOT ENOUGH INFO. Evidence is sufficient when the verdict is SUPPORTS or REFUTES.

:class:`NaturalLogicProver` builds proofs training-free, as QA-NatVer does without a trained proof
generator (docs/methods/natural-logic.md#qa-natver):

1. the claim is cut into at most 6 chunks (APPROXIMATION: a rule-based split at function words and
   punctuation stands in for the flair chunker);
2. each chunk is aligned to the most similar n-gram (at most 7 words, not only stopwords) of the 5
   evidence sentences closest to the claim, by MiniLM cosine (APPROXIMATION of awesome-align); below
   ``align_threshold`` the chunk gets ``#``;
3. for an aligned pair the LLM answers QA-NatVer's yes/no question of each operator =, <, >, !, |; among
   the operators whose P(Yes) (renormalised over Yes/No) exceeds 0.5 the likeliest wins, else ``#``. With
   an ``operator_model`` (a trained NLI cross-encoder, ``hopstack train nli``) the operator is instead the
   model's class for (the span's evidence sentence, the chunk) projected onto the operators
   (:func:`nli_operator`; APPROXIMATION, docs/methods/natural-logic.md#trained-operators).

With ``calibration: content-free`` (the default; an ADDITION to QA-NatVer for small LLMs, after Zhao et al.
2021, "Calibrate Before Use") each operator's P(Yes) is first divided, in odds, by the P(Yes) the LLM gives
the same question about content-free spans ("N/A", "", "[MASK]"; their log-odds averaged): a 0.5B model
says Yes to the paraphrase question about almost anything, and to the others almost never, so raw P(Yes)
picks ``=`` or ``#`` whatever the spans are. Calibrated, 0.5 means "no more Yes than for empty spans".

A claim with an unaligned chunk is NOT ENOUGH INFO whatever its other operators (``#`` is absorbing in the
DFA), so its other chunks are not asked (their operator is ``None`` in the proof).

QA-NatVer then picks among candidate proofs with a DeBERTa NLI model; no NLI model is available offline,
so the single proof above is the proof (APPROXIMATION).
"""

import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from haystack import Document, component
from scipy.special import expit, logit

from hopstack.core.batch import BatchComponent, batch_size_of
from hopstack.core.roles import Reader
from hopstack.core.spec import build
from hopstack.core.text import numbered_passages, prompt_passages, split_sentences
from hopstack.models.cache import LLMUser, call_cache
from hopstack.models.cross_encoder import NLI_LABELS, NliClassifier
from hopstack.models.embedders import embed_texts, load_sentence_transformer, span_vectors
from hopstack.models.onnx_backend import check_backend

SUPPORTS, REFUTES, NOT_ENOUGH_INFO = "SUPPORTS", "REFUTES", "NOT ENOUGH INFO"
VERDICTS = (SUPPORTS, REFUTES, NOT_ENOUGH_INFO)
OPERATORS = ("=", "<", ">", "!", "|", "#")
# ProoFVer's DFA (docs/methods/natural-logic.md#dfa): state -> operator -> next state; the start state is SUPPORTS
TRANSITIONS = {
    SUPPORTS: {"=": SUPPORTS, "<": SUPPORTS, ">": NOT_ENOUGH_INFO, "!": REFUTES, "|": REFUTES, "#": NOT_ENOUGH_INFO},
    REFUTES: {
        "=": REFUTES,
        "<": NOT_ENOUGH_INFO,
        ">": REFUTES,
        "!": SUPPORTS,
        "|": NOT_ENOUGH_INFO,
        "#": NOT_ENOUGH_INFO,
    },
    NOT_ENOUGH_INFO: dict.fromkeys(OPERATORS, NOT_ENOUGH_INFO),
}


def natlog_verdict(operators: Iterable[str]) -> str:
    """The DFA's final state after ``operators``, starting from SUPPORTS."""
    state = SUPPORTS
    for position, operator in enumerate(operators):
        if operator not in TRANSITIONS[state]:
            raise ValueError(f"unknown natural-logic operator {operator!r} at step {position}; use one of {OPERATORS}")
        state = TRANSITIONS[state][operator]
    return state


# QA-NatVer's handwritten questions (docs/methods/natural-logic.md#qa-natver), one per operator other than independence
OPERATOR_QUESTIONS = {
    "=": 'Is "{span}" a paraphrase of "{evidence}"?',
    "<": 'Given the premise "{evidence}", does the hypothesis "{span}" always hold?',
    ">": 'Is the phrase "{span}" a more specific statement than "{evidence}"?',
    "!": 'Is the phrase "{span}" the negation of "{evidence}"?',
    "|": 'Given the premise "{evidence}", can we conclude that the hypothesis "{span}" is false?',
}


def operator_question(operator: str, span: str, evidence: str) -> str:
    """QA-NatVer's question for ``operator`` about a claim span and an evidence span, to answer Yes or No."""
    return OPERATOR_QUESTIONS[operator].format(span=span, evidence=evidence) + " Answer Yes or No."


STOPWORDS = frozenset(
    "a an the of in on at by for with from to into onto over under about as and or but nor so than that "
    "which who whom whose what when where why how is are was were be been being has have had do does did "
    "not no it its this these those there their they them he she his her him we our you your i me my "
    "s 's , . ; : ! ? ( ) \" '".split()
)
# a chunk starts before one of these (flair-chunker APPROXIMATION): prepositions, conjunctions, relatives
# and auxiliaries, where English phrases usually begin
_CHUNK_STARTS = frozenset(
    "of in on at by for with from to into about after before during than that which who whom whose "
    "and or but because while although is are was were has have had does did do can could will would "
    "not never".split()
)
_WORD = re.compile(r"[\w'-]+|[^\w\s]")


def chunk_claim(claim: str, max_chunks: int = 6) -> list[str]:
    """The claim cut into phrases (before prepositions, conjunctions, relatives, auxiliaries and at
    punctuation), a chunk of only stopwords merged into the next, at most ``max_chunks`` (the two shortest
    neighbours merged until it fits)."""
    chunks: list[list[str]] = [[]]
    for token in _WORD.findall(claim):
        if token in ",;:()" or token in ".?!":
            chunks.append([])
            continue
        if token.lower() in _CHUNK_STARTS and chunks[-1] and not all(w.lower() in STOPWORDS for w in chunks[-1]):
            chunks.append([])
        chunks[-1].append(token)
    merged: list[list[str]] = []
    pending: list[str] = []
    for chunk in chunks:
        pending += chunk
        if pending and not all(w.lower() in STOPWORDS for w in pending):
            merged.append(pending)
            pending = []
    if pending and merged:
        merged[-1] += pending
    while len(merged) > max_chunks:
        pair = min(range(len(merged) - 1), key=lambda i: len(merged[i]) + len(merged[i + 1]))
        merged[pair : pair + 2] = [merged[pair] + merged[pair + 1]]
    return [" ".join(chunk) for chunk in merged]


def span_offsets(sentence: str, max_words: int = 7) -> list[tuple[str, int, int]]:
    """The sentence's word n-grams of at most ``max_words`` words that are not only stopwords, each as
    ``(text, first character, end character)`` in the sentence (a text repeated keeps its first place)."""
    words = [m for m in _WORD.finditer(sentence) if re.match(r"[\w'-]", m.group())]
    spans: dict[str, tuple[str, int, int]] = {}
    for start in range(len(words)):
        for end in range(start + 1, min(start + max_words, len(words)) + 1):
            if any(m.group().lower() not in STOPWORDS for m in words[start:end]):
                text = " ".join(m.group() for m in words[start:end])
                spans.setdefault(text, (text, words[start].start(), words[end - 1].end()))
    return list(spans.values())


def chunk_offsets(claim: str, chunks: list[str]) -> list[tuple[int, int]]:
    """Where each of :func:`chunk_claim`'s chunks of ``claim`` lies in it, as (first character, end character)."""
    tokens = list(_WORD.finditer(claim))
    places, position = [], 0
    for chunk in chunks:
        words = chunk.split(" ")
        while position < len(tokens) and tokens[position].group() != words[0]:
            position += 1
        last = min(position + len(words), len(tokens)) - 1
        places.append((tokens[position].start(), tokens[last].end()) if position < len(tokens) else (0, 0))
        position = last + 1
    return places


CONTENT_FREE_SPANS = (("N/A", "N/A"), ("", ""), ("[MASK]", "[MASK]"))
CALIBRATIONS = ("content-free", "none")


def _log_odds(p: float) -> float:
    return float(logit(min(max(p, 1e-12), 1.0 - 1e-12)))


def calibrated_p_yes(p_yes: dict[str, float], baseline: dict[str, float] | None) -> dict[str, float]:
    """P(Yes) per operator with its content-free log-odds (``baseline``) taken out; unchanged without one."""
    if not baseline:
        return dict(p_yes)
    return {op: float(expit(_log_odds(p) - baseline[op])) for op, p in p_yes.items()}


def decide_operators(
    proof: dict[str, Any], yes_threshold: float = 0.5, baseline: dict[str, float] | None = None
) -> dict[str, Any]:
    """Set a proof's operators and verdict from its steps' P(Yes), calibrated by ``baseline`` (operator ->
    content-free log-odds) when given: per step the likeliest operator answered Yes (P(Yes) >
    ``yes_threshold``), else ``#``; an aligned step that was not asked (its proof has an unaligned
    chunk) gets ``None``. The verdict is the DFA's over the decided operators. Returns the proof."""
    for step in proof["steps"]:
        if step.get("evidence_span") and step.get("asked") is False:
            step["operator"] = None
            continue
        scores = calibrated_p_yes(step["p_yes"], baseline)
        answered = {op: p for op, p in scores.items() if p > yes_threshold}
        step["operator"] = max(answered, key=answered.get) if answered else "#"
    proof["operators"] = [step["operator"] for step in proof["steps"]]
    proof["verdict"] = natlog_verdict(op for op in proof["operators"] if op is not None)
    return proof


def nli_operator(claim_span: str, evidence_span: str, probabilities: dict[str, float], threshold: float) -> str:
    """A step's operator from an NLI model's class probabilities (premise: the evidence sentence, hypothesis:
    the claim chunk), the three classes projected onto operators (APPROXIMATION of QA-NatVer's operator
    questions, docs/methods/natural-logic.md#trained-operators): the likeliest class, if it reaches
    ``threshold``, gives entailment -> ``=`` when the evidence span has the same content words as the chunk
    and ``<`` otherwise (the evidence entails the chunk), contradiction -> ``!``; neutral, or no class reaching
    ``threshold``, gives ``#``."""
    label = max(probabilities, key=probabilities.get)
    if label == "neutral" or probabilities[label] < threshold:
        return "#"
    if label == "contradiction":
        return "!"
    return "=" if content_words(claim_span) == content_words(evidence_span) else "<"


def content_words(text: str) -> set[str]:
    """The lower-cased words of ``text`` that are not :data:`STOPWORDS`."""
    return {w.lower() for w in _WORD.findall(text) if w.lower() not in STOPWORDS}


def decide_nli_operators(proof: dict[str, Any], threshold: float = 0.5) -> dict[str, Any]:
    """Set a proof's operators and verdict from its stored NLI probabilities.

    Chunk level (the steps carry ``nli``): each asked step's operator is :func:`nli_operator`'s, ``#`` for an
    unaligned step, ``None`` for an aligned one that was not asked, and the verdict is the DFA's. Claim level
    (the proof carries ``claim_nli``, one entry per evidence sentence): no per-step operators; a proof with
    an unaligned chunk is NOT ENOUGH INFO, else SUPPORTS when the best entailment probability reaches
    ``threshold`` and is at least the best contradiction probability, REFUTES when the best contradiction
    probability reaches it, else NOT ENOUGH INFO. Returns the proof."""
    if "claim_nli" in proof:
        for step in proof["steps"]:
            step["operator"] = None if step.get("evidence_span") else "#"
        proof["operators"] = [step["operator"] for step in proof["steps"]]
        entail = max((row["nli"]["entailment"] for row in proof["claim_nli"]), default=0.0)
        contradict = max((row["nli"]["contradiction"] for row in proof["claim_nli"]), default=0.0)
        if "#" in proof["operators"]:
            proof["verdict"] = NOT_ENOUGH_INFO
        elif entail >= threshold and entail >= contradict:
            proof["verdict"] = SUPPORTS
        else:
            proof["verdict"] = REFUTES if contradict >= threshold else NOT_ENOUGH_INFO
        return proof
    for step in proof["steps"]:
        if not step.get("evidence_span"):
            step["operator"] = "#"
        elif step.get("asked") is False:
            step["operator"] = None
        else:
            step["operator"] = nli_operator(step["claim_span"], step["evidence_span"], step["nli"], threshold)
    proof["operators"] = [step["operator"] for step in proof["steps"]]
    proof["verdict"] = natlog_verdict(op for op in proof["operators"] if op is not None)
    return proof


NLI_LEVELS = ("chunk", "claim")
ALIGNMENTS = ("ngrams", "tokens")


class NaturalLogicProver(LLMUser):
    """Natural-logic proofs of claims from evidence sentences, training-free (see the module docstring).

    :param llm: the LLM answering the operator questions (an LLM spec).
    :param embedder: the sentence embedder for choosing evidence sentences and aligning spans.
    :param max_chunks: claim chunks (QA-NatVer: 6).
    :param evidence_sentences: the sentences closest to the claim that spans are drawn from (AdMIRaL: 5).
    :param max_span_words: the longest evidence span (docs/methods/natural-logic.md#what-hopstack-implements: 7).
    :param align_threshold: cosine below which a chunk is unaligned and gets ``#``
        (docs/methods/natural-logic.md#what-hopstack-implements: 0.5).
    :param alignment: how chunks and evidence spans are embedded for aligning them: ``ngrams`` (each chunk and
        each n-gram encoded as a text of its own, one encoder pass per distinct text, ~900 per claim) or
        ``tokens`` (the claim and each evidence sentence encoded once; a chunk's or span's vector is the mean
        of its contextual token embeddings, as awesome-align aligns words;
        docs/methods/natural-logic.md#what-hopstack-implements).
    :param yes_threshold: P(Yes) an operator question needs (QA-NatVer: 0.5), after calibration.
    :param calibration: ``content-free`` (P(Yes) relative to the same question about empty spans; see the
        module docstring) or ``none`` (QA-NatVer's raw P(Yes)).
    :param device: ``auto | cpu | cuda | cuda:N`` for the embedder.
    :param embedder_backend: ``torch | onnx | onnx-int8 | auto`` for the embedder (docs/concepts/backends.md).
    :param operator_model: an NLI cross-encoder that predicts the operators instead of the LLM's questions
        (:func:`nli_operator`; docs/methods/natural-logic.md#trained-operators): the name of a model
        ``hopstack train nli`` made, or any NLI cross-encoder id or path. None (the default): the LLM.
    :param operator_backend: ``torch | onnx | onnx-int8 | auto`` for the operator model.
    :param nli_threshold: the probability entailment or contradiction needs to give an operator other than
        ``#`` (with ``operator_model``).
    :param nli_level: ``chunk`` (each step's operator from (its evidence sentence, its chunk); the DFA
        decides) or ``claim`` (hopstack's option, not QA-NatVer's: every chunk must still align, then the
        whole claim is read against each evidence sentence and the best entailment or contradiction decides;
        :func:`decide_nli_operators`).
    :param cache: use the on-disk call cache for LLM answers, embeddings and NLI probabilities.
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        embedder: str = "minilm",
        max_chunks: int = 6,
        evidence_sentences: int = 5,
        max_span_words: int = 7,
        align_threshold: float = 0.5,
        alignment: str = "ngrams",
        yes_threshold: float = 0.5,
        calibration: str = "content-free",
        device: str = "auto",
        embedder_backend: str = "torch",
        operator_model: str | None = None,
        operator_backend: str = "torch",
        nli_threshold: float = 0.5,
        nli_level: str = "chunk",
        cache: bool = True,
    ):
        if calibration not in CALIBRATIONS:
            raise ValueError(f"calibration must be one of {CALIBRATIONS}, got {calibration!r}")
        if min(max_chunks, evidence_sentences, max_span_words) < 1:
            raise ValueError("max_chunks, evidence_sentences and max_span_words must be at least 1")
        if not 0.0 <= yes_threshold < 1.0:
            raise ValueError(f"yes_threshold must be in [0, 1), got {yes_threshold}")
        if alignment not in ALIGNMENTS:
            raise ValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        self.use_llm(llm, cache)
        self.embedder = embedder
        self.max_chunks = max_chunks
        self.evidence_sentences = evidence_sentences
        self.max_span_words = max_span_words
        self.align_threshold = align_threshold
        self.alignment = alignment
        self.yes_threshold = yes_threshold
        self.calibration = calibration
        self.device = device
        self.embedder_backend = check_backend(embedder_backend)
        if operator_model is not None and not (isinstance(operator_model, str) and operator_model.strip()):
            raise ValueError(f"operator_model must be a model name, id or path, got {operator_model!r}")
        if not 0.0 <= nli_threshold < 1.0:
            raise ValueError(f"nli_threshold must be in [0, 1), got {nli_threshold}")
        if nli_level not in NLI_LEVELS:
            raise ValueError(f"nli_level must be one of {NLI_LEVELS}, got {nli_level!r}")
        self.nli_level = nli_level
        self.operator_model = operator_model
        self.operator_backend = check_backend(operator_backend)
        self.nli_threshold = nli_threshold
        self._nli = None
        if operator_model is not None:
            self._nli = NliClassifier(operator_model, device, max_length=128, cache=cache, backend=operator_backend)
        self._encoder = None
        self._baseline: dict[str, float] | None = None

    def warm_up(self) -> None:
        """Load the embedder and the operator model, or the LLM when there is none."""
        if self._nli is not None:
            self._nli.warm_up()
        else:
            LLMUser.warm_up(self)
        if self._encoder is None:
            self._encoder = load_sentence_transformer(self.embedder, self.device, self.embedder_backend)

    def _embed(self, texts: list[str]) -> np.ndarray:
        return embed_texts(self._encoder, texts, 128, True, cache=call_cache(self.cache), model_id=self.embedder)

    def prove(self, claims: Sequence[str], evidence: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
        """One proof per claim from its evidence sentences: ``{"claim", "evidence", "steps": [{"claim_span",
        "evidence_span", "evidence_sentence", "similarity", "asked", "p_yes", "operator"}], "operators",
        "verdict", "calibration"}`` (``calibration``: the content-free log-odds per operator when its operators
        were asked, else ``None``). The batch's texts are embedded in two calls and every operator question of
        the batch goes to the LLM in one call; with an ``operator_model`` each asked step has ``nli`` (its
        class probabilities) instead of ``p_yes``, all of the batch's steps in one call of the model."""
        self.warm_up()
        claims = [claim.strip() for claim in claims]
        chosen = self._closest_sentences(claims, [[s.strip() for s in sentences] for sentences in evidence])
        chunks = [chunk_claim(claim, self.max_chunks) for claim in claims]
        spans = [self._spans(sentences) for sentences in chosen]
        vectors = self._alignment_vectors(claims, chunks, spans)
        proofs, questions = [], []
        for claim, sentences, claim_chunks, claim_spans, (chunk_rows, span_rows) in zip(
            claims, chosen, chunks, spans, vectors
        ):
            steps = [self._align(chunk, row, claim_spans, span_rows) for chunk, row in zip(claim_chunks, chunk_rows)]
            decidable = all(step["evidence_span"] for step in steps)
            for step in steps:
                step["asked"] = decidable
            proofs.append({"claim": claim, "evidence": sentences, "steps": steps})
            questions += [(step, op) for step in steps if decidable for op in OPERATOR_QUESTIONS]
        if self._nli is not None:
            return self._model_operators(proofs)
        baseline = self.content_free_log_odds() if questions else None
        p_yes = self._p_yes([operator_question(op, s["claim_span"], s["evidence_span"]) for s, op in questions])
        for (step, op), p in zip(questions, p_yes):
            step["p_yes"][op] = p
        for proof in proofs:
            # only a proof whose operators were asked used the baseline: the others report none, whatever the
            # batch or the questions before it held
            proof["calibration"] = baseline if any(step["asked"] for step in proof["steps"]) else None
            decide_operators(proof, self.yes_threshold, proof["calibration"])
        return proofs

    def _model_operators(self, proofs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decide the proofs with the NLI model: one call for every asked step of the batch (chunk level) or
        for every evidence sentence of the proofs whose chunks all align (claim level)."""
        if self.nli_level == "claim":
            decidable = [proof for proof in proofs if all(step["asked"] for step in proof["steps"])]
            pairs = [(sentence, proof["claim"]) for proof in decidable for sentence in proof["evidence"]]
            rows = iter(self._nli.probabilities(pairs).tolist())
            for proof in proofs:
                proof["claim_nli"] = []
            for proof in decidable:
                proof["claim_nli"] = [
                    {"sentence": s, "nli": dict(zip(NLI_LABELS, next(rows)))} for s in proof["evidence"]
                ]
        else:
            asked = [step for proof in proofs for step in proof["steps"] if step["asked"]]
            pairs = [(step["evidence_sentence"], step["claim_span"]) for step in asked]
            for step, row in zip(asked, self._nli.probabilities(pairs).tolist()):
                step["nli"] = dict(zip(NLI_LABELS, row))
        for proof in proofs:
            proof["calibration"] = None
            decide_nli_operators(proof, self.nli_threshold)
        return proofs

    def _p_yes(self, questions: list[str]) -> list[float]:
        """P(Yes), renormalised over Yes/No, of each yes/no question (one LLM call)."""
        if not questions:
            return []
        prompts = [[{"role": "user", "content": question}] for question in questions]
        log_probs = np.asarray(self._llm.score(prompts, ["Yes", "No"]), dtype=np.float64).reshape(-1, 2)
        return expit(log_probs[:, 0] - log_probs[:, 1]).tolist()

    def content_free_log_odds(self) -> dict[str, float] | None:
        """Per operator, the mean log-odds of Yes to its question about content-free spans (asked once)."""
        if self.calibration == "none" or self._baseline is not None:
            return self._baseline
        fillers = [(op, span, ev) for op in OPERATOR_QUESTIONS for span, ev in CONTENT_FREE_SPANS]
        p_yes = self._p_yes([operator_question(op, span, ev) for op, span, ev in fillers])
        self._baseline = {
            op: float(np.mean([_log_odds(p) for (o, _, _), p in zip(fillers, p_yes) if o == op]))
            for op in OPERATOR_QUESTIONS
        }
        return self._baseline

    def _spans(self, sentences: list[str]) -> dict[str, tuple[str, int, int]]:
        """The distinct evidence spans of the sentences (:func:`span_offsets`), in order, each with the first
        sentence it comes from and its place there."""
        spans: dict[str, tuple[str, int, int]] = {}
        for sentence in sentences:
            for span, first, end in span_offsets(sentence, self.max_span_words):
                spans.setdefault(span, (sentence, first, end))
        return spans

    def _alignment_vectors(
        self, claims: list[str], chunks: list[list[str]], spans: list[dict[str, tuple[str, int, int]]]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per claim, the unit vectors of its chunks and of its evidence spans (in ``spans``' order), in one
        encoder call for the batch (``alignment``: ``ngrams`` embeds every distinct text, ``tokens`` pools
        each claim's and sentence's contextual token embeddings, :func:`span_vectors`)."""
        if self.alignment == "ngrams":
            texts = list(dict.fromkeys(t for group in (*chunks, *spans) for t in group))
            row = {text: i for i, text in enumerate(texts)}
            vectors = self._embed(texts) if texts else np.zeros((0, 0), dtype=np.float32)
            return [(vectors[[row[c] for c in cs]], vectors[[row[s] for s in ss]]) for cs, ss in zip(chunks, spans)]
        chunk_places = [chunk_offsets(claim, claim_chunks) for claim, claim_chunks in zip(claims, chunks)]
        wanted: dict[str, dict[tuple[int, int], None]] = {}  # text -> its distinct (first, end) places
        for claim, places, claim_spans in zip(claims, chunk_places, spans):
            wanted.setdefault(claim, {}).update(dict.fromkeys(places))
            for sentence, first, end in claim_spans.values():
                wanted.setdefault(sentence, {})[(first, end)] = None
        rows = span_vectors(self._encoder, list(wanted), [list(places) for places in wanted.values()])
        found = {text: dict(zip(places, vectors)) for (text, places), vectors in zip(wanted.items(), rows)}
        return [
            (
                np.array([found[claim][place] for place in places]),
                np.array([found[sentence][(first, end)] for sentence, first, end in claim_spans.values()]),
            )
            for claim, places, claim_spans in zip(claims, chunk_places, spans)
        ]

    def _closest_sentences(self, claims: list[str], evidence: list[list[str]]) -> list[list[str]]:
        """Per claim, its ``evidence_sentences`` sentences closest to it (MiniLM cosine), in their own order."""
        long = [i for i, sentences in enumerate(evidence) if len(sentences) > self.evidence_sentences]
        if not long:
            return evidence
        texts = list(dict.fromkeys(t for i in long for t in (claims[i], *evidence[i])))
        row = {text: j for j, text in enumerate(texts)}
        vectors = self._embed(texts)
        chosen = list(evidence)
        for i in long:
            similarity = vectors[[row[s] for s in evidence[i]]] @ vectors[row[claims[i]]]
            order = np.argsort(-similarity, kind="stable")[: self.evidence_sentences]
            chosen[i] = [evidence[i][j] for j in sorted(order.tolist())]
        return chosen

    def _align(
        self, chunk: str, vector: np.ndarray, spans: dict[str, tuple[str, int, int]], span_rows: np.ndarray
    ) -> dict[str, Any]:
        """The chunk's proof step before its operator: the most similar evidence span (and its sentence), if
        similar enough."""
        step: dict[str, Any] = {"claim_span": chunk, "evidence_span": "", "evidence_sentence": "", "similarity": 0.0}
        step["p_yes"] = {}
        if not spans:
            return step
        similarity = span_rows @ vector
        best = int(np.argmax(similarity))
        step["similarity"] = float(similarity[best])
        if similarity[best] >= self.align_threshold:
            candidate = list(spans)[best]
            step["evidence_span"] = candidate
            step["evidence_sentence"] = spans[candidate][0]
        return step


class Stopper(BatchComponent):
    """The stopper contract of iterative retrieval: ``run(query, documents, hop)`` -> ``stop`` (the evidence
    so far suffices, or the policy says to stop) and ``trace`` (why), implemented by ``run_batch``."""

    stops_hops = True  # the Stopper role (hopstack.core.roles)

    @component.output_types(stop=bool, trace=dict[str, Any])
    def run(self, query: str, documents: list[Document], hop: int = 1) -> dict[str, Any]:
        """Decide for one question after hop ``hop``."""
        return self.run_single(query=query, documents=documents, hop=hop)


@component
class FixedHopsStopper(Stopper):
    """Stop after ``hops`` hops, whatever the evidence (the fixed-hop baseline)."""

    def __init__(self, hops: int = 2):
        if hops < 1:
            raise ValueError(f"hops must be at least 1, got {hops}")
        self.hops = hops

    def run_batch(
        self, query: list[str], documents: list[list[Document]], hop: list[int] | None = None
    ) -> dict[str, list[Any]]:
        """Stop the questions that have had ``hops`` hops."""
        hops = hop or [1] * batch_size_of({"query": query, "documents": documents})
        return {"stop": [h >= self.hops for h in hops], "trace": [{"hop": h} for h in hops]}


@component
class ScoreThresholdStopper(Stopper):
    """Stop once the best document's score reaches ``threshold`` (a threshold-based baseline; the scores
    are the retriever's own, so the threshold depends on the retriever)."""

    def __init__(self, threshold: float):
        self.threshold = threshold

    def run_batch(
        self, query: list[str], documents: list[list[Document]], hop: list[int] | None = None
    ) -> dict[str, list[Any]]:
        """Compare each question's best document score with the threshold."""
        batch_size_of({"query": query, "documents": documents})
        best = [max((d.score for d in docs if d.score is not None), default=float("-inf")) for docs in documents]
        return {"stop": [b >= self.threshold for b in best], "trace": [{"top_score": b} for b in best]}


TRIGGER_PROMPT = (
    "Documents:\n{documents}\n\nQuestion: {question}\n"
    "Think step by step using only the documents. If they are enough to answer, end with "
    '"So the answer is: <answer>." If they are not, say which fact is missing.'
)


@component
class AnswerTriggerStopper(LLMUser, Stopper):
    """Stop when the LLM, reasoning over the evidence so far, writes a trigger string (FlashRAG's IRCoT-style
    stop rule: "So the answer is").

    :param llm: an LLM spec.
    :param triggers: stop strings, matched case-insensitively.
    :param prompt: the user message, with ``{documents}`` and ``{question}``.
    :param max_documents: documents shown, in order.
    :param max_passage_words: words kept of each document.
    :param max_tokens: the reasoning budget.
    :param cache: use the on-disk call cache.
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        triggers: list[str] | None = None,
        prompt: str = TRIGGER_PROMPT,
        max_documents: int = 5,
        max_passage_words: int = 100,
        max_tokens: int = 96,
        cache: bool = True,
    ):
        if "{documents}" not in prompt or "{question}" not in prompt:
            raise ValueError("prompt needs the placeholders {documents} and {question}")
        self.use_llm(llm, cache)
        self.triggers = triggers or ["so the answer is"]
        self.prompt = prompt
        self.max_documents = max_documents
        self.max_passage_words = max_passage_words
        self.max_tokens = max_tokens

    def run_batch(
        self, query: list[str], documents: list[list[Document]], hop: list[int] | None = None
    ) -> dict[str, list[Any]]:
        """One LLM call for the batch; a question stops when its reply holds a trigger."""
        batch_size_of({"query": query, "documents": documents})
        self.warm_up()
        prompts = []
        for question, docs in zip(query, documents):
            passages = prompt_passages(docs[: self.max_documents], True, self.max_passage_words)
            listed = numbered_passages(passages, "(none)")
            prompts.append([{"role": "user", "content": self.prompt.format(documents=listed, question=question)}])
        replies = self._llm.generate(prompts, max_tokens=self.max_tokens)
        triggers = [t.lower() for t in self.triggers]
        stop = [any(t in reply.lower() for t in triggers) for reply in replies]
        return {"stop": stop, "trace": [{"reply": reply} for reply in replies]}


CLAIM_SOURCES = ("question", "sub-questions")
CLAIM_SYSTEM = "You rewrite a question and its answer as one short declarative sentence that states the answer."
CLAIM_FEW_SHOT = [
    ("Who founded the Brannock Looms mill?", "Ada Brannock", "Ada Brannock founded the Brannock Looms mill."),
    (
        "Do both Tech Daily and Market Watch report that Orbit's new phone has a larger battery?",
        "Yes",
        "Both Tech Daily and Market Watch report that Orbit's new phone has a larger battery.",
    ),
    ("Which river runs through Hollin Ford?", "the Saltwhistle", "The Saltwhistle River runs through Hollin Ford."),
]


def evidence_suffices(trace: dict[str, Any]) -> bool:
    """The natural-logic stopper's rule on its trace of one question: with claims per sub-question, every
    sub-claim's proof reaches SUPPORTS; else the claim's proof reaches SUPPORTS or REFUTES."""
    if "proofs" in trace:
        return all(proof["verdict"] == SUPPORTS for proof in trace["proofs"])
    return trace["proof"]["verdict"] != NOT_ENOUGH_INFO


def claim_messages(question: str, answer: str) -> list[dict[str, str]]:
    """The chat that turns a question and its answer into a claim (few-shot turns written for hopstack)."""
    messages = [{"role": "system", "content": CLAIM_SYSTEM}]
    for q, a, claim in CLAIM_FEW_SHOT:
        messages += [
            {"role": "user", "content": f"Question: {q}\nAnswer: {a}"},
            {"role": "assistant", "content": claim},
        ]
    return messages + [{"role": "user", "content": f"Question: {question}\nAnswer: {answer}"}]


@component
class NaturalLogicStopper(LLMUser, Stopper):
    """Stop when the evidence proves or refutes the claim in natural logic (AdMIRaL's sufficiency check).

    With ``claims: true`` the query is the claim (fact verification). Otherwise the query is a question: the
    reader (an :class:`AnswerGenerator` from ``reader``) answers it from the documents, the LLM rewrites
    question and answer as a declarative claim, and "sufficient" means the evidence proves or refutes that
    answer claim. With ``claims_from: sub-questions`` the decomposer splits the question into sub-questions
    (once per question), the reader answers each, each answer becomes a short claim, and "sufficient" means
    every sub-claim's proof reaches SUPPORTS (a question the decomposer cannot split is its own
    sub-question). The evidence is the sentences of the first ``max_documents`` documents; the proofs
    (:class:`NaturalLogicProver`: chunks, aligned evidence spans, operators, the DFA's verdict) are the
    trace, the explanation of the decision.

    :param llm: the LLM that writes claims and answers the operator questions.
    :param claims: the queries are claims, not questions.
    :param reader: the reader, a nested spec ``{type: reader, init_parameters}``; parameters it leaves out
        (``llm``, ``max_documents``, ``cache``) are the stopper's.
    :param claims_from: ``question`` (one claim from the whole question's answer; sufficient when it is
        proved or refuted) or ``sub-questions`` (one claim per sub-question; sufficient when all are proved).
    :param decomposer: with ``claims_from: sub-questions``, a nested spec ``{type: decomposer,
        init_parameters}`` (:class:`~hopstack.components.decomposition.QuestionDecomposer`); ``llm`` and
        ``cache`` it leaves out are the stopper's.
    :param max_documents: documents whose sentences are evidence.
    :param evidence_titles: give each sentence as ``title ; sentence`` (AdMIRaL's evidence format), so
        that claim chunks can align to the document's title too.
    :param prover: the prover, a nested spec ``{type: natural-logic, init_parameters}`` with
        :class:`NaturalLogicProver`'s parameters (``embedder``, ``embedder_backend``, ``max_chunks``,
        ``evidence_sentences``, ``max_span_words``, ``align_threshold``, ``alignment``, ``yes_threshold``,
        ``calibration``, ``operator_model``, ``operator_backend``, ``nli_threshold``, ``nli_level``);
        ``llm``, ``device`` and ``cache`` it leaves out are the stopper's.
    :param device: ``auto | cpu | cuda | cuda:N`` for the embedder.
    :param cache: use the on-disk call cache.
    """

    def __init__(
        self,
        llm: str | dict[str, Any] = "qwen2.5-0.5b",
        claims: bool = False,
        reader: dict[str, Any] | None = None,
        claims_from: str = "question",
        decomposer: dict[str, Any] | None = None,
        max_documents: int = 5,
        evidence_titles: bool = True,
        prover: dict[str, Any] | None = None,
        device: str = "auto",
        cache: bool = True,
    ):
        if max_documents < 1:
            raise ValueError(f"max_documents must be at least 1, got {max_documents}")
        if claims_from not in CLAIM_SOURCES:
            raise ValueError(f"claims_from must be one of {CLAIM_SOURCES}, got {claims_from!r}")
        self.use_llm(llm, cache)
        self.claims = claims
        self.reader = reader
        self.claims_from = claims_from
        self.decomposer = decomposer
        self.max_documents = max_documents
        self.evidence_titles = evidence_titles
        self.prover = prover
        self.device = device
        shared = {"llm": llm, "device": device, "cache": cache, "max_documents": max_documents}
        self._prover = build(prover or {"type": "natural-logic"}, "prover", defaults=shared)
        self._reader = None if claims else build(reader or {"type": "reader"}, "reader", role=Reader, defaults=shared)
        self._decomposer = None
        if not claims and claims_from == "sub-questions":
            llm_defaults = {"llm": llm, "cache": cache}
            self._decomposer = build(decomposer or {"type": "decomposer"}, "decomposer", defaults=llm_defaults)
        self._sub_questions: dict[str, list[str]] = {}

    def warm_up(self) -> None:
        """Load the LLM, the embedder, the reader and the decomposer."""
        LLMUser.warm_up(self)
        for part in (self._prover, self._reader, self._decomposer):
            if part is not None:
                part.warm_up()

    def run_batch(
        self, query: list[str], documents: list[list[Document]], hop: list[int] | None = None
    ) -> dict[str, list[Any]]:
        """Prove every question's claim from its evidence: one reader call, one claim-writing call, one
        operator-question call for the batch."""
        batch_size_of({"query": query, "documents": documents})
        self.warm_up()
        read = [docs[: self.max_documents] for docs in documents]
        evidence = [[s for d in docs for s in self._sentences(d)] for docs in read]
        if self._decomposer is not None:
            return self._sub_question_claims(query, read, evidence)
        traces: list[dict[str, Any]] = [{} for _ in query]
        claims = list(query)
        if self._reader is not None:
            claims, answers = self._answer_claims(query, read)
            for trace, answer in zip(traces, answers):
                trace["answer"] = answer
        proofs = self._prover.prove(claims, evidence)
        for trace, proof in zip(traces, proofs):
            trace.update(claim=proof["claim"], verdict=proof["verdict"], proof=proof)
        return {"stop": [evidence_suffices(trace) for trace in traces], "trace": traces}

    def _answer_claims(self, questions: list[str], read: list[list[Document]]) -> tuple[list[str], list[str]]:
        """The reader's answer to each question from its documents and the claim the LLM states from both
        (the question itself when the LLM writes nothing): one reader call and one claim-writing call."""
        answers = [a.data for a in self._reader.answer(questions, read)]
        replies = self._llm.generate([claim_messages(q, a) for q, a in zip(questions, answers)], max_tokens=64)
        claims = [
            next((line.strip() for line in r.splitlines() if line.strip()), q) for r, q in zip(replies, questions)
        ]
        return claims, answers

    def _sub_question_claims(
        self, query: list[str], read: list[list[Document]], evidence: list[list[str]]
    ) -> dict[str, list[Any]]:
        """Stop when every sub-question's claim is proved: one decomposer call for the questions not seen
        before, then one reader, one claim-writing and one prover call for all the batch's sub-questions."""
        new = [q for q in dict.fromkeys(query) if q not in self._sub_questions]
        if new:
            found = self._decomposer.run_batch(question=new)["sub_questions"]
            self._sub_questions.update({q: subs or [q] for q, subs in zip(new, found)})
        groups = [self._sub_questions[q] for q in query]
        flat = [(i, sub) for i, subs in enumerate(groups) for sub in subs]
        claims, answers = self._answer_claims([sub for _, sub in flat], [read[i] for i, _ in flat])
        proofs = self._prover.prove(claims, [evidence[i] for i, _ in flat])
        answered, proved = iter(answers), iter(proofs)
        traces = []
        for subs in groups:
            group_answers, group_proofs = [next(answered) for _ in subs], [next(proved) for _ in subs]
            verdicts = [proof["verdict"] for proof in group_proofs]
            traces.append({"sub_questions": subs, "answers": group_answers, "verdicts": verdicts})
            traces[-1]["proofs"] = group_proofs
        return {"stop": [evidence_suffices(trace) for trace in traces], "trace": traces}

    def _sentences(self, document: Document) -> list[str]:
        """The document's evidence sentences, as AdMIRaL gives them: ``title ; sentence`` (with a title)."""
        title = document.meta.get("title") if self.evidence_titles else None
        sentences = split_sentences(document.content or "")
        return [f"{title} ; {sentence}" for sentence in sentences] if title else sentences
