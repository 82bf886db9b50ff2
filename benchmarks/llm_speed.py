"""LLM backend speed on this machine: generation tokens per second and yes/no scoring throughput for the
in-process llama.cpp backend and the OpenAI-compatible backend against a llama_cpp.server started here,
the transformers backend (the GPU path; here it de-quantises the GGUF and runs on the CPU), and the
speed-up of a rerun served by the on-disk call cache.

Prompts are built from MultiHop-RAG: a relevance question (query + one retrieved-looking chunk) for
scoring, and a short-answer question for generation.

    python benchmarks/llm_speed.py --model qwen2.5-0.5b --json benchmarks/results/llm_speed.json
"""

import argparse
import tempfile
import time
from pathlib import Path

from results_file import write_results

from hopstack.datasets.multihop_rag import load_queries
from hopstack.datasets.registry import resolve_dataset
from hopstack.index.formats import read_corpus
from hopstack.models.cache import CachedLLM, CallCache
from hopstack.models.llama_server import llama_server
from hopstack.models.llm import LlamaCppLLM, OpenAICompatibleLLM, TransformersLLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--no-server", action="store_true", help="skip the OpenAI-compatible server row")
    parser.add_argument("--no-transformers", action="store_true", help="skip the transformers row")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    _, folder = resolve_dataset("multihop-rag")
    queries = load_queries(folder)[: args.prompts]
    articles = {d.id: d for d in read_corpus(folder / "corpus.json")}
    llm = LlamaCppLLM(args.model, n_ctx=args.n_ctx)
    started = time.perf_counter()
    llm.warm_up()
    load_s = time.perf_counter() - started

    relevance = []
    for q in queries:
        text = articles[q.evidence_urls[0]].text
        at = max(text.find(q.facts[0]), 0)
        passage = text[max(0, at - 300) : at + 500]  # the gold evidence with some context
        relevance.append(
            [
                {"role": "system", "content": "Answer with Yes or No."},
                {"role": "user", "content": f"Query: {q.question}\nPassage: {passage}\nIs the passage relevant?"},
            ]
        )
    questions = [[{"role": "user", "content": f"Answer in a few words: {q.question}"}] for q in queries]

    def count_tokens(texts: list[str]) -> int:
        return sum(len(llm._llama.tokenize(t.encode(), add_bos=False)) for t in texts)

    report = {
        "model": args.model,
        "load_s": load_s,
        "backends": {"llama.cpp": measure(llm, questions, relevance, args.max_tokens, count_tokens)},
    }
    if not args.no_transformers:
        hf = TransformersLLM(args.model, device="auto", batch_size=4, n_ctx=args.n_ctx)
        started = time.perf_counter()
        hf.warm_up()
        report["transformers_load_s"] = time.perf_counter() - started
        report["backends"]["transformers (GGUF de-quantised)"] = measure(
            hf, questions, relevance, args.max_tokens, count_tokens
        )
    if not args.no_server:
        with llama_server(args.model, n_ctx=args.n_ctx, alias="bench") as base:
            server = OpenAICompatibleLLM(base, model="bench", concurrency=4)
            report["backends"]["openai-server (llama_cpp.server)"] = measure(
                server, questions, relevance, args.max_tokens, count_tokens
            )

    with tempfile.TemporaryDirectory() as tmp:
        cached = CachedLLM(llm, CallCache(Path(tmp) / "calls.sqlite", enabled=True))
        started = time.perf_counter()
        cached.score(relevance, ["Yes", "No"])
        first_s = time.perf_counter() - started
        calls_after_first = cached.calls
        started = time.perf_counter()
        cached.score(relevance, ["Yes", "No"])
        rerun_s = time.perf_counter() - started
        rerun_calls = cached.calls - calls_after_first
    report["cache"] = {
        "first_s": first_s,
        "rerun_s": rerun_s,
        "speedup": first_s / rerun_s,
        "model_calls_on_rerun": rerun_calls,
    }

    print(f"{args.model}: load {load_s:.1f} s ({len(questions)} prompts each)")
    for name, row in report["backends"].items():
        print(
            f"  {name:<36} generate {row['generate_tokens_per_s']:5.1f} tokens/s, "
            f"yes/no scoring {row['score_prompts_per_s']:.2f} prompts/s, "
            f"'Yes' preferred on {row['yes_preferred']}/{len(relevance)} gold-evidence passages"
        )
    print(
        f"  cached rerun of the scoring: {first_s:.2f} s -> {rerun_s * 1000:.1f} ms "
        f"({report['cache']['speedup']:.0f}x), {rerun_calls} model calls"
    )
    write_results(args.json, report)


def measure(llm, questions, relevance, max_tokens, count_tokens) -> dict:
    """Generation tokens/s and yes/no scoring prompts/s of one backend."""
    started = time.perf_counter()
    outputs = llm.generate(questions, max_tokens=max_tokens)
    generate_s = time.perf_counter() - started
    started = time.perf_counter()
    scores = llm.score(relevance, ["Yes", "No"])
    score_s = time.perf_counter() - started
    tokens = count_tokens(outputs)
    return {
        "generate_tokens": tokens,
        "generate_tokens_per_s": tokens / generate_s,
        "generate_s_per_prompt": generate_s / len(questions),
        "score_prompts_per_s": len(relevance) / score_s,
        "yes_preferred": sum(s[0] > s[1] for s in scores),
    }


if __name__ == "__main__":
    main()
