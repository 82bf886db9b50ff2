"""Start-up cost of the command line: process wall time of `hopstack --version`, `hopstack validate FILE` and
a fully cached `hopstack compare` (3 variants), median of 5 runs each, with the largest imports of each
command (python -X importtime) beside it (docs/concepts/backends.md#start-up).

    python benchmarks/startup.py --index runs/mhr-index [--limit 300] [--json benchmarks/results/startup.json]

The compare runs once first to fill the node cache (a scratch cache file), then is timed from the cache.
Targets (issue 23): --version <= 0.3 s, validate <= 2 s, the cached compare <= 3 s.
Not a test: speed is never asserted in the test suite.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import write_results

REPO = Path(__file__).resolve().parent.parent
HOPSTACK = [sys.executable, "-m", "hopstack"]
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def wall(command: list[str], env: dict[str, str], runs: int = 5) -> dict:
    """Median and all wall seconds of ``runs`` runs of ``command`` (each must succeed)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times]}


def top_imports(command: list[str], env: dict[str, str], count: int = 12) -> list[dict]:
    """The imports that cost the most (cumulative ms, at any depth; depth 0 is imported by the command
    itself) in one run of ``command``: a nested heavy import shows under the modules that pulled it in."""
    run = subprocess.run([sys.executable, "-X", "importtime", *command[1:]], env=env, capture_output=True, text=True)
    found = []
    for line in run.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            depth = (len(match.group(3)) - 1) // 2
            milliseconds = round(int(match.group(2)) / 1000, 1)
            found.append({"module": match.group(4), "cumulative_ms": milliseconds, "depth": depth})
    return sorted(found, key=lambda row: -row["cumulative_ms"])[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", required=True)
    parser.add_argument("--dataset", default="multihop-rag")
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = {"cpu_count": os.cpu_count(), "python": sys.version, "commands": {}}
    with tempfile.TemporaryDirectory() as scratch:
        env = {**os.environ, "HOPSTACK_CACHE": "on"}
        variants = [str(REPO / "yaml" / f"{name}.yaml") for name in ("bm25", "dense", "hybrid")]
        compare = [
            *HOPSTACK, "compare", *variants, "--dataset", args.dataset, "--index", args.index, "--limit",
            str(args.limit), "--cache", str(Path(scratch) / "nodes.sqlite"), "--out", str(Path(scratch) / "report"),
        ]  # fmt: skip
        subprocess.run(compare, env=env, check=True, capture_output=True)  # fills the node cache
        commands = {
            "hopstack --version": [*HOPSTACK, "--version"],
            "hopstack validate yaml/hybrid.yaml": [*HOPSTACK, "validate", str(REPO / "yaml" / "hybrid.yaml")],
            f"hopstack compare (3 variants, {args.limit} q, cached)": compare,
        }
        for name, command in commands.items():
            measured = wall(command, env)
            measured["top_imports"] = top_imports(command, env)
            report["commands"][name] = measured
            heavy = ", ".join(f"{row['module']} {row['cumulative_ms']:.0f} ms" for row in measured["top_imports"][:6])
            print(f"{name}: median {measured['median_s']:.2f} s of 5; largest imports: {heavy}", flush=True)
    write_results(args.json, report)


if __name__ == "__main__":
    main()
