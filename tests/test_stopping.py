"""Natural-logic stopping: the DFA against ProoFVer's table (docs/methods/natural-logic.md#dfa) on every operator
sequence up to length 5, claim chunking, evidence spans, proofs with a scripted LLM, and the stop policies."""

import itertools
import math

import numpy as np
import pytest
from haystack import Document

from hopstack.components.stopping import (
    NOT_ENOUGH_INFO,
    OPERATORS,
    REFUTES,
    SUPPORTS,
    AnswerTriggerStopper,
    FixedHopsStopper,
    NaturalLogicProver,
    NaturalLogicStopper,
    ScoreThresholdStopper,
    chunk_claim,
    chunk_offsets,
    natlog_verdict,
    span_offsets,
)
from hopstack.models.embedders import load_sentence_transformer, span_vectors
from hopstack.testing import assert_run_batch_matches_run

TINY_LLM = {"type": "llama.cpp", "init_parameters": {"model": "smollm2-135m", "n_ctx": 2048}}

# docs/methods/natural-logic.md#dfa, copied as text: state \ op | = < > ! | #
TABLE = """
SUPPORTS        | S | S | NEI | R | R | NEI
REFUTES         | R | NEI | R | S | NEI | NEI
NOT ENOUGH INFO | NEI | NEI | NEI | NEI | NEI | NEI
"""
NAMES = {"S": SUPPORTS, "R": REFUTES, "NEI": NOT_ENOUGH_INFO}


def _reference():
    table = {}
    for line in TABLE.strip().splitlines():
        state, *cells = [cell.strip() for cell in line.split("|")]
        table[state] = {op: NAMES[cell] for op, cell in zip("=<>!|#", cells)}
    return table


def test_the_dfa_is_the_table_on_every_sequence_up_to_five_operators():
    table = _reference()
    checked = 0
    for length in range(6):
        for sequence in itertools.product(OPERATORS, repeat=length):
            state = SUPPORTS
            for op in sequence:
                state = table[state][op]
            assert natlog_verdict(sequence) == state, sequence
            checked += 1
    assert checked == sum(6**n for n in range(6)) == 9331
    assert natlog_verdict([]) == SUPPORTS, "the start state"
    assert (
        natlog_verdict("!!") == SUPPORTS and natlog_verdict("!>") == REFUTES and natlog_verdict("#=") == NOT_ENOUGH_INFO
    )


def test_an_unknown_operator_is_named():
    with pytest.raises(ValueError, match=r"'~' at step 1"):
        natlog_verdict(["=", "~"])


def test_claims_are_cut_into_at_most_six_phrases_none_of_only_stopwords():
    assert chunk_claim("A deficiency of vitamin B12 increases blood levels of homocysteine.") == [
        "A deficiency",
        "of vitamin B12 increases blood levels",
        "of homocysteine",
    ]
    long = chunk_claim(
        "The river runs through the ford, which was founded in 1820 by Ada and her brother "
        "who lived in the north of the valley."
    )
    assert 1 <= len(long) <= 6 and " ".join(long).replace(" ,", ",").startswith("The river runs")
    assert chunk_claim("") == [] and chunk_claim("of the") == []


def test_evidence_spans_are_ngrams_up_to_the_limit_not_only_stopwords_with_their_places():
    sentence = "Ada founded the mill, Ada said."
    spans = span_offsets(sentence, max_words=2)
    assert [text for text, _, _ in spans] == [
        "Ada", "Ada founded", "founded", "founded the", "the mill", "mill", "mill Ada", "Ada said", "said"
    ]  # fmt: skip
    assert all(sentence[first:end].replace(",", "") == text for text, first, end in spans)
    assert spans[0] == ("Ada", 0, 3), "a repeated span keeps its first place"


def test_chunk_offsets_place_each_chunk_in_its_claim():
    claim = "The mill, founded by Ada in 1850, grinds corn."
    chunks = chunk_claim(claim)
    places = chunk_offsets(claim, chunks)
    assert chunks == ["The mill", "founded", "by Ada", "in 1850", "grinds corn"]
    assert [claim[a:b] for a, b in places] == chunks


class ScriptedLLM:
    """Answers an operator question Yes with the probability the script gives for its operator and spans."""

    def __init__(self, p_yes):
        self.p_yes, self.prompts = p_yes, []

    def score(self, prompts, candidates):
        assert candidates == ["Yes", "No"]
        self.prompts.extend(p[0]["content"] for p in prompts)
        rows = []
        for prompt in prompts:
            p = next((v for key, v in self.p_yes.items() if all(part in prompt[0]["content"] for part in key)), 0.1)
            rows.append([math.log(p), math.log(1 - p)])
        return rows


@pytest.mark.slow
def test_a_proof_aligns_chunks_asks_each_operator_and_runs_the_dfa():
    prover = NaturalLogicProver(llm=TINY_LLM, cache=False, align_threshold=0.5, calibration="none")
    prover.warm_up()
    prover._llm = ScriptedLLM(
        {
            ("paraphrase", "Ada Brannock"): 0.9,  # "=" for the founder
            ("negation", "in 1820", "1910"): 0.8,  # "!" for the year: refuted
            ("paraphrase", "in 1820", "1910"): 0.3,
        }
    )
    evidence = [["Ada Brannock founded the mill in 1910.", "Stock prices fell on Tuesday."]]
    [proof] = prover.prove(["Ada Brannock founded the mill in 1820."], evidence)
    assert [s["claim_span"] for s in proof["steps"]] == ["Ada Brannock founded the mill", "in 1820"]
    assert proof["steps"][1]["evidence_span"] and proof["operators"][1] == "!"
    assert proof["verdict"] == (REFUTES if proof["operators"][0] in "=<" else NOT_ENOUGH_INFO)
    questions = len(prover._llm.prompts)
    assert questions == 5 * sum(1 for s in proof["steps"] if s["evidence_span"]), "five questions per aligned chunk"
    [unaligned] = prover.prove(["Quantum chromodynamics"], [["Stock prices fell on Tuesday."]])
    assert unaligned["operators"] == ["#"] and unaligned["verdict"] == NOT_ENOUGH_INFO
    assert len(prover._llm.prompts) == questions, "an unaligned chunk asks nothing"
    [partly] = prover.prove(["Ada Brannock founded the mill of quantum chromodynamics."], evidence)
    assert partly["operators"][0] is None and partly["operators"][-1] == "#", partly["steps"]
    assert partly["verdict"] == NOT_ENOUGH_INFO
    assert len(prover._llm.prompts) == questions, "an unaligned chunk makes the proof NEI: its other chunks ask nothing"


@pytest.mark.slow
def test_content_free_calibration_takes_out_the_llms_yes_bias_per_operator():
    prover = NaturalLogicProver(llm=TINY_LLM, cache=False)
    prover.warm_up()
    # Yes to the paraphrase question about anything (0.6, as for empty spans); the negation question is
    # rarely answered Yes (0.05 for empty spans) but more often (0.3) for the year: calibrated, that is "!"
    prover._llm = ScriptedLLM({("paraphrase",): 0.6, ("negation", "1910"): 0.3, ("negation",): 0.05})
    evidence = [["Ada Brannock founded the mill in 1910."]]
    [proof] = prover.prove(["Ada Brannock founded the mill in 1820."], evidence)
    baseline = proof["calibration"]
    assert baseline["="] == pytest.approx(math.log(0.6 / 0.4)) and baseline["!"] == pytest.approx(math.log(0.05 / 0.95))
    assert proof["operators"] == ["#", "!"] and proof["verdict"] == NOT_ENOUGH_INFO
    asked = len(prover._llm.prompts)
    assert asked == 5 * 3 + 5 * 2, "the content-free questions (5 operators x 3 fillers), then 5 per chunk"
    prover.prove(["Ada Brannock founded the mill in 1820."], evidence)
    assert len(prover._llm.prompts) == asked + 10, "the content-free questions are asked once"
    raw = NaturalLogicProver(llm=TINY_LLM, cache=False, calibration="none")
    raw.warm_up()
    raw._llm = prover._llm
    assert raw.prove(["Ada Brannock founded the mill in 1820."], evidence)[0]["operators"] == ["=", "="]


@pytest.mark.parametrize("alignment", ["ngrams", "tokens"])
def test_chunks_align_to_the_evidence_spans_they_restate_in_either_alignment(alignment):
    prover = NaturalLogicProver(alignment=alignment, device="cpu", cache=False)
    prover._encoder = load_sentence_transformer("minilm", "cpu")
    encoded = []
    encode = prover._encoder.encode
    prover._encoder.encode = lambda texts, **kw: encoded.extend(texts) or encode(texts, **kw)
    try:
        claims = ["Ada Brannock founded the mill in 1820."]
        chunks = [chunk_claim(claims[0])]
        spans = [prover._spans(["Ada Brannock founded the mill in 1910.", "Stock prices fell on Tuesday."])]
        [(chunk_rows, span_rows)] = prover._alignment_vectors(claims, chunks, spans)
    finally:
        prover._encoder.encode = encode
    steps = [prover._align(chunk, row, spans[0], span_rows) for chunk, row in zip(chunks[0], chunk_rows)]
    assert [s["evidence_span"] for s in steps] == ["Ada Brannock founded the mill", "in 1910"]
    assert all(s["similarity"] > 0.5 for s in steps)
    assert span_rows.shape == (len(spans[0]), 384) and np.allclose(np.linalg.norm(span_rows, axis=1), 1.0, atol=1e-5)
    # ngrams: every distinct chunk and span is a text of its own; tokens: the claim and the two sentences, once each
    assert len(encoded) == (len({*chunks[0], *spans[0]}) if alignment == "ngrams" else 3)


def test_span_vectors_are_zero_past_the_encoders_token_limit():
    encoder = load_sentence_transformer("minilm", "cpu")
    text = "word " * 400
    [rows] = span_vectors(encoder, [text.strip()], [[(0, 4), (1990, 1994)]])
    assert np.linalg.norm(rows[0]) == pytest.approx(1.0, abs=1e-5) and not rows[1].any()


def _docs(*scores):
    return [Document(id=f"d{i}", content=f"text {i}", score=s) for i, s in enumerate(scores)]


def test_fixed_hops_and_score_threshold_stoppers():
    fixed = FixedHopsStopper(hops=2).run_batch(query=["a", "b"], documents=[[], []], hop=[1, 2])
    assert fixed["stop"] == [False, True]
    threshold = ScoreThresholdStopper(threshold=5.0)
    out = threshold.run_batch(query=["a", "b", "c"], documents=[_docs(3.0, 6.0), _docs(1.0), []])
    assert out["stop"] == [True, False, False] and out["trace"][0] == {"top_score": 6.0}
    assert_run_batch_matches_run(threshold, [{"query": "a", "documents": _docs(7.0)}, {"query": "b", "documents": []}])


def test_answer_trigger_stopper_stops_on_a_trigger_string():
    class Replies:
        def generate(self, prompts, max_tokens):
            return ["So the answer is: Oslo." if "Oslo" in p[0]["content"] else "The city is missing." for p in prompts]

    stopper = AnswerTriggerStopper(llm=TINY_LLM)
    stopper._llm = Replies()
    documents = [[Document(id="x", content="Oslo is the capital.")], [Document(id="y", content="Rain.")]]
    out = stopper.run_batch(query=["capital?", "capital?"], documents=documents)
    assert out["stop"] == [True, False] and out["trace"][1] == {"reply": "The city is missing."}


def test_natural_logic_stopper_turns_the_answer_into_a_claim_and_stops_on_a_verdict(monkeypatch):
    stopper = NaturalLogicStopper(llm=TINY_LLM)

    class Claims:
        def generate(self, prompts, max_tokens):
            return [f"{p[-1]['content'].split('Answer: ')[1]} is the capital of Norway." for p in prompts]

    class Reader:
        def generate_scored(self, prompts, max_tokens):
            return [("Oslo", [0.0]) for _ in prompts]

    seen = []

    def prove(claims, evidence):
        seen.extend(evidence)
        verdicts = [SUPPORTS if "Oslo" in " ".join(e) else NOT_ENOUGH_INFO for e in evidence]
        return [{"claim": c, "verdict": v} for c, v in zip(claims, verdicts)]

    monkeypatch.setattr(stopper, "warm_up", lambda: None)
    stopper._llm, stopper._reader._llm = Claims(), Reader()
    monkeypatch.setattr(stopper._prover, "prove", prove)
    documents = [
        [Document(id="x", content="Oslo is the capital of Norway. It has a fjord.", meta={"title": "Oslo"})],
        [Document(id="y", content="Rain.")],
    ]
    out = stopper.run_batch(query=["What is the capital of Norway?"] * 2, documents=documents)
    assert seen == [["Oslo ; Oslo is the capital of Norway.", "Oslo ; It has a fjord."], ["Rain."]], "AdMIRaL's format"
    assert out["stop"] == [True, False]
    assert out["trace"][0]["claim"] == "Oslo is the capital of Norway." and out["trace"][0]["answer"] == "Oslo"
    assert out["trace"][1]["verdict"] == NOT_ENOUGH_INFO


@pytest.mark.slow
def test_sub_question_claims_stop_only_when_every_sub_claim_is_proved(monkeypatch):
    stopper = NaturalLogicStopper(llm=TINY_LLM, claims_from="sub-questions")
    decomposed = []

    class Decomposer:
        def generate(self, prompts, max_tokens, temperature):
            decomposed.extend(p[-1]["content"] for p in prompts)
            return ["Who directed Film A?\nWhere was that director born?" for _ in prompts]

    class Claims:
        def generate(self, prompts, max_tokens):
            return [f"Claim: {p[-1]['content'].split('Answer: ')[1]}." for p in prompts]

    class Reader:
        def generate_scored(self, prompts, max_tokens):
            return [("Ada" if "Who directed" in p[-1]["content"] else "Oslo", [0.0]) for p in prompts]

    def prove(claims, evidence):
        proved = [SUPPORTS if claim.split(": ")[1].rstrip(".") in " ".join(e) else NOT_ENOUGH_INFO
                  for claim, e in zip(claims, evidence)]  # fmt: skip
        return [{"claim": c, "verdict": v} for c, v in zip(claims, proved)]

    monkeypatch.setattr(stopper, "warm_up", lambda: None)
    stopper._llm, stopper._reader._llm, stopper._decomposer._llm = Claims(), Reader(), Decomposer()
    monkeypatch.setattr(stopper._prover, "prove", prove)
    question = "Where was the director of Film A born?"
    both = [Document(id="x", content="Film A was directed by Ada. Ada was born in Oslo.")]
    one = [Document(id="y", content="Film A was directed by Ada.")]
    out = stopper.run_batch(query=[question, question], documents=[both, one])
    assert out["stop"] == [True, False]  # the second lacks the birthplace: one sub-claim is not proved
    assert out["trace"][1]["sub_questions"] == ["Who directed Film A?", "Where was that director born?"]
    assert (out["trace"][1]["answers"], out["trace"][1]["verdicts"]) == (["Ada", "Oslo"], [SUPPORTS, NOT_ENOUGH_INFO])
    assert len(decomposed) == 1  # one decomposition for the question, whatever the batch or the hop
    stopper.run_batch(query=[question], documents=[both])
    assert len(decomposed) == 1
    with pytest.raises(ValueError, match="claims_from must be one of"):
        NaturalLogicStopper(llm=TINY_LLM, claims_from="hops")


def test_stopper_settings_are_checked():
    with pytest.raises(ValueError, match="hops"):
        FixedHopsStopper(hops=0)
    with pytest.raises(ValueError, match="max_chunks"):
        NaturalLogicStopper(llm=TINY_LLM, prover={"type": "natural-logic", "init_parameters": {"max_chunks": 0}})
    with pytest.raises(ValueError, match="alignment must be one of"):
        NaturalLogicStopper(llm=TINY_LLM, prover={"type": "natural-logic", "init_parameters": {"alignment": "words"}})
    with pytest.raises(ValueError, match="placeholders"):
        AnswerTriggerStopper(llm=TINY_LLM, prompt="no placeholders")


def test_operators_are_redecided_at_another_yes_threshold():
    from hopstack.components.stopping import decide_operators

    proof = {"steps": [{"p_yes": {"=": 0.58, "!": 0.52}}, {"p_yes": {"=": 0.55, "|": 0.62}}, {"p_yes": {}}]}
    assert decide_operators(proof, 0.5)["operators"] == ["=", "|", "#"] and proof["verdict"] == NOT_ENOUGH_INFO
    assert decide_operators(proof, 0.6)["operators"] == ["#", "|", "#"]
    proof["steps"].pop()
    assert decide_operators(proof, 0.5)["verdict"] == REFUTES and decide_operators(proof, 0.7)["operators"] == [
        "#",
        "#",
    ]
    # calibrated by the odds of Yes for empty spans: "!" (odds 1:4 there) beats "=" (1:2) in the first step,
    # and "|" (9:1 there, so 0.62 is little) loses to "=" in the second
    baseline = {"=": math.log(0.5), "!": math.log(0.25), "|": math.log(9.0)}
    assert decide_operators(proof, 0.5, baseline)["operators"] == ["!", "="] and proof["verdict"] == REFUTES
    proof["steps"].append({"evidence_span": "mill", "asked": False, "p_yes": {}})
    assert decide_operators(proof, 0.5, baseline)["operators"] == ["!", "=", None] and proof["verdict"] == REFUTES


def test_prover_refuses_an_unknown_calibration():
    with pytest.raises(ValueError, match="calibration"):
        NaturalLogicProver(llm=TINY_LLM, calibration="platt")
