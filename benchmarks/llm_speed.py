"""LLM backend speed on this machine: generation tokens per second, yes/no scoring throughput, and the
speed-up of a rerun served by the on-disk call cache.

Prompts are built from MultiHop-RAG: a relevance question (query + one retrieved-looking chunk) for
scoring, and a short-answer question for generation.

    python benchmarks/llm_speed.py --model qwen2.5-0.5b --json benchmarks/results/llm_speed.json
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

from hopstack.datasets.multihop_rag import load_queries
from hopstack.datasets.registry import resolve_dataset
from hopstack.index.formats import read_corpus
from hopstack.models.cache import CachedLLM, CallCache
from hopstack.models.llm import LlamaCppLLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=32)
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

    started = time.perf_counter()
    outputs = llm.generate(questions, max_tokens=args.max_tokens)
    generate_s = time.perf_counter() - started
    generated_tokens = sum(len(llm._llama.tokenize(o.encode(), add_bos=False)) for o in outputs)

    started = time.perf_counter()
    scores = llm.score(relevance, ["Yes", "No"])
    score_s = time.perf_counter() - started

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

    report = {
        "backend": "llama.cpp",
        "model": args.model,
        "load_s": load_s,
        "generate": {
            "prompts": len(questions),
            "tokens": generated_tokens,
            "tokens_per_s": generated_tokens / generate_s,
            "s_per_prompt": generate_s / len(questions),
        },
        "score_yes_no": {"prompts": len(relevance), "prompts_per_s": len(relevance) / score_s},
        "cache": {
            "first_s": first_s,
            "rerun_s": rerun_s,
            "speedup": first_s / rerun_s,
            "model_calls_on_rerun": rerun_calls,
        },
        "yes_preferred": sum(s[0] > s[1] for s in scores),
    }
    print(f"{args.model} (llama.cpp): load {load_s:.1f} s")
    print(
        f"  generate: {report['generate']['tokens_per_s']:.1f} tokens/s "
        f"({report['generate']['s_per_prompt']:.2f} s/prompt)"
    )
    print(f"  yes/no scoring: {report['score_yes_no']['prompts_per_s']:.2f} prompts/s")
    print(
        f"  cached rerun: {first_s:.2f} s -> {rerun_s * 1000:.1f} ms ({report['cache']['speedup']:.0f}x), "
        f"{rerun_calls} model calls"
    )
    print(f"  'yes' preferred on {report['yes_preferred']}/{len(relevance)} gold-evidence passages")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2), encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
