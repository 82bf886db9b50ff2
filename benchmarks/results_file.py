"""What every benchmark script does with its ``--json`` option."""

import json
from pathlib import Path
from typing import Any


def write_results(path: Path | None, report: dict[str, Any]) -> None:
    """Write ``report`` as indented JSON to ``path`` (creating its folder) and say so; nothing when None."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(f"wrote {path}")


def variant_rows(result) -> dict[str, dict[str, Any]]:
    """Per variant of a ``compare()`` result: status, error, metrics, ms a question, the adjusted p-value of
    each metric against the baseline, and the metrics significantly better or worse."""
    rows = {}
    for variant in result.variants:
        comparison = variant.compared_to_baseline
        rows[variant.name] = {
            "status": variant.status,
            "error": variant.error,
            "metrics": variant.metrics,
            "ms_per_question": variant.ms_per_question,
            "p_values": {m: c.p_adjusted for m, c in comparison.items()},
            "better": [m for m, c in comparison.items() if c.significant and c.delta > 0],
            "worse": [m for m, c in comparison.items() if c.significant and c.delta < 0],
        }
    return rows
