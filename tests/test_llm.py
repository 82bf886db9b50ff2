"""The llama.cpp LLM backend on the tiny SmolLM2 model: generation, scoring, truncation, sharing."""

import math

import pytest

llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is part of the local extra")


@pytest.fixture(scope="module")
def tiny():
    from hopstack.models.llm import LlamaCppLLM

    llm = LlamaCppLLM("smollm2-135m", n_ctx=512, n_threads=2)
    llm.warm_up()
    return llm


@pytest.mark.slow
def test_generate_is_deterministic_at_temperature_zero(tiny):
    messages = [{"role": "user", "content": "Name a colour."}]
    first = tiny.generate([messages, "The capital of France is"], max_tokens=8)
    second = tiny.generate([messages, "The capital of France is"], max_tokens=8)
    assert first == second and all(isinstance(text, str) and text for text in first)
    assert "Name a colour." in tiny.render(messages) and tiny.render("plain") == "plain"


@pytest.mark.slow
def test_score_gives_log_probabilities_and_single_equals_multi_token_path(tiny):
    prompt = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
    [[yes, no, sentence]] = tiny.score([prompt], ["yes", "no", "yes it is"])
    assert all(math.isfinite(v) and v <= 0 for v in (yes, no, sentence))
    assert sentence < yes  # more tokens, more (negative) log-probability
    probabilities = [math.exp(v) for v in tiny.score([prompt], [str(d) for d in range(10)])[0]]
    assert 0 < sum(probabilities) <= 1.0 + 1e-6


@pytest.mark.slow
def test_multi_token_candidates_score_as_fresh_evaluations_of_each_prefix(tiny):
    prompt = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
    [[_, after_another]] = tiny.score([prompt], ["no way", "yes it is"])
    [[alone]] = tiny.score([prompt], ["yes it is"])
    assert after_another == pytest.approx(alone, abs=1e-4)  # rewinding to the prompt leaves no trace
    candidate = "purple elephants dance"  # every token unlikely: a dropped or misplaced term costs >= 13 nats
    [[scored]] = tiny.score([prompt], [candidate])
    tokens = tiny._tokens(prompt, 400)
    piece = tiny._llama.tokenize(candidate.encode(), add_bos=False, special=False)
    terms = []
    for i, token in enumerate(piece):  # the chain rule, each prefix evaluated from scratch
        tiny._llama.reset()
        tiny._llama.eval(tokens + piece[:i])
        terms.append(float(tiny._last_log_probs()[token]))
    # llama.cpp's batched and one-token kernels round differently, by CPU family: on an AMD EPYC (AVX2, no
    # AVX-512) the two sides differ by 0.054 nats of -42.80 here (1.3e-3 relative; 4.4e-4 for "yes it is"),
    # elsewhere by under 1e-4 relative. The tolerance, 5e-3 relative (0.21 nats), is four times the largest
    # difference measured and 60 times below the smallest term a wrong chain would miss by.
    assert len(terms) >= 3 and min(abs(t) for t in terms) > 10
    assert scored == pytest.approx(sum(terms), rel=5e-3)


@pytest.mark.slow
def test_a_prompt_sharing_a_prefix_with_the_last_one_scores_as_if_evaluated_fresh(tiny):
    base = "Passages: the mill opened in 1820; the river floods in spring. Question: "
    prompts = [base + "when did the mill open?", base + "does the river flood?", base, base + "when did"]
    candidates = ["yes", " 1820", " the mill"]
    from hopstack.models.llm import USAGE

    tiny._llama.reset()
    before = USAGE.snapshot()
    in_turn = tiny.score(prompts, candidates)  # each after the one before: only the new tokens evaluated
    used = {k: v - before[k] for k, v in USAGE.snapshot().items()}
    lengths = [len(tiny._tokens(p, 400)) for p in prompts]
    assert used["prompts"] == 4 and used["prompt_tokens"] == sum(lengths) and used["seconds"] > 0
    assert lengths[0] + 3 < used["evaluated_tokens"] < sum(lengths) + 4, "shared prefixes are not evaluated again"
    for prompt, scores in zip(prompts, in_turn):
        tiny._llama.reset()
        assert scores == pytest.approx(tiny.score([prompt], candidates)[0], abs=1e-3)
    assert tiny.score([prompts[0]], candidates) == tiny.score([prompts[0]], candidates)  # the same prompt again


@pytest.mark.slow
def test_over_long_prompts_are_cut_not_crashed(tiny):
    before = tiny.truncated
    long_prompt = "word " * 2000
    [text] = tiny.generate([long_prompt], max_tokens=4)
    [[score]] = tiny.score([long_prompt], ["yes"])
    assert isinstance(text, str) and math.isfinite(score)
    assert tiny.truncated == before + 2


@pytest.mark.slow
def test_models_are_shared_between_users():
    from hopstack.models.llm import LlamaCppLLM

    a, b = LlamaCppLLM("smollm2-135m", n_ctx=512), LlamaCppLLM("smollm2-135m", n_ctx=512)
    a.warm_up()
    b.warm_up()
    assert a._llama is b._llama


@pytest.mark.slow
def test_score_agrees_with_greedy_generation(tiny):
    """The greedy next token must be the most probable candidate, and clearly more than uniform."""
    for prompt in ([{"role": "user", "content": "Say hello."}], "One, two, three, four,"):
        [first] = tiny.generate([prompt], max_tokens=1)
        others = [c for c in ("zebra", " purple", "Quantum") if c != first]
        [scores] = tiny.score([prompt], [first, *others])
        assert scores[0] == max(scores), (prompt, first, scores)
        assert math.exp(scores[0]) > 0.05


@pytest.mark.slow
def test_one_shared_model_is_safe_to_call_from_several_threads(tiny):
    from concurrent.futures import ThreadPoolExecutor

    prompts = ["One, two, three,", "The sky is", "Hello, my name is", "Water boils at"]
    expected = [tiny.generate([p], max_tokens=4)[0] for p in prompts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda p: tiny.generate([p], max_tokens=4)[0], prompts * 2))
    assert results == expected * 2


@pytest.mark.slow
def test_generate_scored_is_greedy_generation_with_each_tokens_log_probability(tiny):
    prompts = [[{"role": "user", "content": "Name a colour."}], "One, two, three,", "The capital of France is"]
    scored = tiny.generate_scored(prompts, max_tokens=6)
    assert [text for text, _ in scored] == tiny.generate(prompts, max_tokens=6), "the same greedy text"
    for prompt, (_, log_probs) in zip(prompts, scored):
        assert 1 <= len(log_probs) <= 6 and all(v <= 0 and math.isfinite(v) for v in log_probs)
        first = tiny.generate([prompt], max_tokens=1)[0]
        [[alone]] = tiny.score([prompt], [first])
        assert log_probs[0] == pytest.approx(alone, abs=1e-3), "the first token's log-probability, as score gives it"


def test_a_llama_cpp_build_with_amx_int8_kernels_is_refused_with_the_rebuild_command():
    from hopstack.models.llm import LLAMA_WITHOUT_AMX, LlamaBuildError, check_llama_build

    amx = "CPU : SSE3 = 1 | AVX2 = 1 | AVX512 = 1 | AVX512_VNNI = 1 | AMX_INT8 = 1 | REPACK = 1 | "
    with pytest.raises(LlamaBuildError, match="issue #20824") as refused:
        check_llama_build(amx)
    assert LLAMA_WITHOUT_AMX in str(refused.value) and "-mno-amx-int8" in LLAMA_WITHOUT_AMX
    check_llama_build(amx.replace("AMX_INT8 = 1 | ", ""))  # no AMX kernels: nothing to refuse
