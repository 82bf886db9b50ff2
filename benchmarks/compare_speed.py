"""How much `hopstack compare` saves: variants that share their retrieval, run as one union graph, against
separate runs of each variant, and a rerun served by the node cache.

The four variants are yaml/hybrid.yaml with each of the four fusion methods (rrf, zscore, minmax, dbsf):
they share the BM25 and dense retrievers (top-100 each) and differ in the fusion node only. Each
measurement runs in a fresh Python process (models loaded, index opened, nothing warm), times
everything the command does except writing the report (loading, warm-up, running, scoring and, for
compare, the paired tests), with the call cache off:

- separate: `evaluate()` (what `hopstack eval` runs) once per variant;
- compare, cold: `compare()` over the four files with an empty node cache;
- compare, cached: the same again, with the node cache the cold run filled.

"seconds" start once hopstack's modules are imported; "process s" is the whole process, interpreter
start and imports (about 3 s) included.

Targets (issue 5): compare cold <= 1.5x the costliest separate run; cached rerun >= 20x faster than cold.

    python benchmarks/compare_speed.py --index runs/mhr-index [--limit N] [--json benchmarks/results/compare_speed.json]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import yaml
from results_file import write_results

REPO = Path(__file__).resolve().parent.parent
METHODS = ("rrf", "zscore", "minmax", "dbsf")


def write_variants(folder: Path) -> list[Path]:
    """yaml/hybrid.yaml with each fusion method, as pipeline files in ``folder``."""
    base = yaml.safe_load((REPO / "yaml" / "hybrid.yaml").read_text(encoding="utf-8"))
    files = []
    for method in METHODS:
        base["components"]["fuse"]["init_parameters"]["method"] = method
        path = folder / f"hybrid-{method}.yaml"
        path.write_text(yaml.safe_dump(base, sort_keys=False), encoding="utf-8")
        files.append(path)
    return files


def worker(args: argparse.Namespace) -> dict:
    """One measurement, in this (fresh) process; the clock starts after hopstack's modules are imported."""
    from hopstack.experiments.compare import compare
    from hopstack.experiments.evaluation import evaluate
    from hopstack.graphs.node_cache import NodeCache

    started = time.perf_counter()
    if args.worker == "separate":
        metric = evaluate(args.files[0], args.dataset, args.index, args.limit)["metrics"]["MRR@10"]
        union = None
    else:
        cache = NodeCache(args.cache, enabled=True)
        result = compare([Path(f) for f in args.files], args.dataset, args.index, limit=args.limit, node_cache=cache)
        metric = {v.name: v.metrics["MRR@10"] for v in result.variants}
        union = asdict(result.union)
    return {"seconds": time.perf_counter() - started, "MRR@10": metric, "union": union}


def timed_process(command: list[str], env: dict) -> tuple[dict, float]:
    """Run a worker; its JSON line and the wall time of the whole process (interpreter start and imports too)."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{command[3]} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), time.perf_counter() - started


def measure(kind: str, files: list[Path], args: argparse.Namespace, cache: Path | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--dataset", args.dataset, "--index", str(args.index)]
    command += ["--files", *map(str, files)]
    if args.limit:
        command += ["--limit", str(args.limit)]
    if cache:
        command += ["--cache", str(cache)]
    env = {**os.environ, "HOPSTACK_CACHE": "off"}  # no call cache: query embeddings are computed every run
    result, process_s = timed_process(command, env)
    return {**result, "process_s": process_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index", type=Path, required=True, help="index folder of the dataset's corpus")
    parser.add_argument("--dataset", default="multihop-rag")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--files", nargs="*", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        files = write_variants(Path(tmp))
        separate = {f.stem: measure("separate", [f], args) for f in files}
        cache = Path(tmp) / "nodes.sqlite"
        cold = measure("compare", files, args, cache)
        cached = measure("compare", files, args, cache)
    costliest = max(run["seconds"] for run in separate.values())
    for name, run in separate.items():  # the union must give each variant what it gives alone
        if abs(cold["MRR@10"][name] - run["MRR@10"]) > 1e-9 or cold["MRR@10"] != cached["MRR@10"]:
            raise SystemExit(f"{name}: MRR@10 differs between the separate run, compare and the cached rerun")
    report = {
        "dataset": args.dataset,
        "limit": args.limit,
        "variants": list(separate),
        "separate_s": {name: run["seconds"] for name, run in separate.items()},
        "separate_total_s": sum(run["seconds"] for run in separate.values()),
        "compare_cold_s": cold["seconds"],
        "compare_cached_s": cached["seconds"],
        "process_s": {
            **{f"separate {name}": run["process_s"] for name, run in separate.items()},
            "compare cold": cold["process_s"],
            "compare cached": cached["process_s"],
        },
        "cold_vs_costliest_separate": cold["seconds"] / costliest,
        "cold_vs_separate_total": cold["seconds"] / sum(run["seconds"] for run in separate.values()),
        "cached_speedup": cold["seconds"] / cached["seconds"],
        "union_cold": cold["union"],
        "union_cached": cached["union"],
        "MRR@10": {name: run["MRR@10"] for name, run in separate.items()},
    }
    print(f"{'run':<28}{'seconds':>10}{'process s':>11}")
    for name, run in separate.items():
        print(f"{'separate ' + name:<28}{run['seconds']:>10.1f}{run['process_s']:>11.1f}")
    print(f"{'separate, all four':<28}{report['separate_total_s']:>10.1f}")
    print(f"{'compare (one union), cold':<28}{cold['seconds']:>10.1f}{cold['process_s']:>11.1f}")
    print(f"{'compare, cached rerun':<28}{cached['seconds']:>10.2f}{cached['process_s']:>11.1f}")
    print(
        f"compare cold / costliest separate = {report['cold_vs_costliest_separate']:.2f}x (target <= 1.5x); "
        f"cached rerun {report['cached_speedup']:.0f}x faster than cold (target >= 20x)"
    )
    write_results(args.json, report)


if __name__ == "__main__":
    main()
