"""hopstack's in-process llama.cpp against llama.cpp's own bench tool, same GGUF, threads and batch sizes
(docs/concepts/llms.md#speed).

llama-bench measures prompt processing (pp: a prompt of --prompt random tokens read in one batch by a fresh
context) and generation (tg: --gen tokens decoded one at a time from an empty context). This script runs
llama-bench, then the same two tests on the llama.cpp context that hopstack's backend loads
(``LlamaCppLLM.warm_up``, through llama-cpp-python), with flash attention off and on, and one end-to-end
row: hopstack's ``generate`` (sampling included) in tokens a second. Ratios are in-process / llama-bench.

Build llama-bench from the same source as the installed llama-cpp-python (its sdist vendors llama.cpp):

    pip download llama-cpp-python==0.3.36 --no-deps --no-binary :all: -d /tmp/llb
    tar xzf /tmp/llb/llama_cpp_python-0.3.36.tar.gz -C /tmp/llb && cd /tmp/llb/llama_cpp_python-0.3.36/vendor/llama.cpp
    cmake -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \\
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF && cmake --build build --target llama-bench

    python benchmarks/llama_cpp_speed.py --llama-bench /tmp/llb/.../build/bin/llama-bench \\
        [--model qwen2.5-0.5b] [--json benchmarks/results/llama_cpp_speed.json]
"""

import argparse
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from results_file import write_results

from hopstack.models.llm import USAGE, LlamaCppLLM
from hopstack.models.registry import resolve_model

BATCH = 512  # n_batch and n_ubatch: llama-cpp-python's defaults, given to llama-bench too


def llama_bench(binary: str, model_path: str, threads: int, prompt: int, gen: int, repetitions: int) -> dict:
    """llama-bench's tokens/s (mean and standard deviation) per (flash attention, test)."""
    command = [
        binary, "-m", model_path, "-t", str(threads), "-p", str(prompt), "-n", str(gen), "-b", str(BATCH),
        "-ub", str(BATCH), "-fa", "0,1", "-r", str(repetitions), "-o", "json",
    ]  # fmt: skip
    rows = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    results = {}
    for row in rows:
        test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
        results[(bool(row["flash_attn"]), test)] = {"tokens_per_s": row["avg_ts"], "std": row["stddev_ts"]}
    version = subprocess.run([binary, "--version"], capture_output=True, text=True)
    return {"results": results, "build": (version.stdout + version.stderr).strip()}


def in_process(model: str, threads: int, flash_attn: bool, prompt: int, gen: int, repetitions: int) -> dict:
    """The pp and tg tests on the context hopstack's backend loads, plus hopstack's ``generate``: tokens/s
    (mean and standard deviation over ``repetitions`` after one warm-up, as llama-bench reports)."""
    llm = LlamaCppLLM(model, n_ctx=prompt + gen + 16, n_threads=threads, flash_attn=flash_attn)
    llm.warm_up()
    llama = llm._llama  # the very context hopstack runs on
    tokens = np.random.default_rng(0).integers(100, llama.n_vocab() - 100, prompt + gen).tolist()

    def read_prompt() -> float:
        llama.reset()  # a fresh sequence: eval drops the KV cells from position 0 on
        started = time.perf_counter()
        llama.eval(tokens[:prompt])
        return prompt / (time.perf_counter() - started)

    def decode() -> float:
        llama.reset()
        started = time.perf_counter()
        for token in tokens[:gen]:
            llama.eval([token])
        return gen / (time.perf_counter() - started)

    def generate() -> float:
        llama.reset()
        before = USAGE.generated_tokens
        started = time.perf_counter()
        llm.generate(["Write a long story about a lighthouse keeper."], max_tokens=gen)
        return (USAGE.generated_tokens - before) / (time.perf_counter() - started)

    results = {}
    for test, run in ((f"pp{prompt}", read_prompt), (f"tg{gen}", decode), ("hopstack generate", generate)):
        run()  # warm-up, as llama-bench does
        speeds = [run() for _ in range(repetitions)]
        results[test] = {"tokens_per_s": statistics.mean(speeds), "std": statistics.stdev(speeds)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--llama-bench", required=True, help="llama.cpp's llama-bench binary")
    parser.add_argument("--model", default="qwen2.5-0.5b")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--prompt", type=int, default=512)
    parser.add_argument("--gen", type=int, default=128)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import llama_cpp

    path = resolve_model(args.model)
    bench = llama_bench(args.llama_bench, path, args.threads, args.prompt, args.gen, args.repetitions)
    report = {
        "model": args.model,
        "threads": args.threads,
        "batch": BATCH,
        "llama_bench_build": bench["build"],
        "llama_cpp_python": llama_cpp.__version__,
        "in_process_system_info": llama_cpp.llama_print_system_info().decode().strip(),
        "rows": [],
    }
    settings = f"{args.threads} threads, n_batch = n_ubatch = {BATCH}"
    print(f"{args.model}, {settings}; tokens/s, mean ± sd of {args.repetitions}")
    print(f"{'test':<20}{'flash attn':>11}{'llama-bench':>16}{'hopstack':>16}{'ratio':>8}")
    for flash_attn in (False, True):
        ours = in_process(args.model, args.threads, flash_attn, args.prompt, args.gen, args.repetitions)
        for test, measured in ours.items():
            theirs = bench["results"].get((flash_attn, test))
            ratio = measured["tokens_per_s"] / theirs["tokens_per_s"] if theirs else None
            report["rows"].append(
                {"test": test, "flash_attn": flash_attn, "hopstack": measured, "llama_bench": theirs, "ratio": ratio}
            )
            bench_text = f"{theirs['tokens_per_s']:.1f} ± {theirs['std']:.1f}" if theirs else "-"
            ours_text = f"{measured['tokens_per_s']:.1f} ± {measured['std']:.1f}"
            ratio_text = f"{ratio:.2f}" if ratio else "-"
            switch = "on" if flash_attn else "off"
            print(f"{test:<20}{switch:>11}{bench_text:>16}{ours_text:>16}{ratio_text:>8}", flush=True)
    write_results(args.json, report)


if __name__ == "__main__":
    main()
