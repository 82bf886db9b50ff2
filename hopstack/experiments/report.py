"""Reports of a pipeline-variant comparison (``hopstack compare``): Markdown tables, PNG plots, one
self-contained HTML file, the result as JSON and every variant's results question by question (JSON lines).

Everything is rendered from the :class:`hopstack.experiments.compare.CompareResult` that
:func:`hopstack.experiments.compare.compare` returns. The report is first built as a list of blocks (headings,
paragraphs, tables, lists, preformatted text, images) whose cells are plain text; the Markdown and HTML renderers
only differ in how they write those blocks, so both files show the same content.
"""

import base64
import html
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hopstack.experiments.compare import CompareResult, Comparison, Significance, UnionStats, VariantResult

COST_METRICS = {"context_tokens": "context tokens"}
"""Metrics that measure what a variant costs, not its quality, by their column label: lower is better; they are
shown with ms/question under the results table's cost group and never marked ▲ / ▼."""

_TEST_NAMES = {"fisher": "Fisher's randomization test", "student": "paired Student's t-test"}
_CORRECTION_NAMES = {"none": "no correction", "holm": "Holm's correction", "bonferroni": "Bonferroni's correction"}
_BETTER, _WORSE = "▲", "▼"
_MISSING = "—"
_COST_GROUP = "cost (lower is better)"


@dataclass
class _Table:
    header: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    """Indexes of right-aligned columns."""
    groups: list[tuple[str, int]] = field(default_factory=list)
    """Headers over runs of columns, (label, number of columns) from the first column on (HTML only)."""


# A block is (kind, payload): ("h1" | "h2" | "h3" | "p" | "pre", str), ("list", list[str]), ("table", _Table),
# ("image", (key of the PNG in write_report's files, alternative text)) or ("details", (summary, blocks)): blocks
# folded under a summary line.
_Block = tuple[str, Any]


def _metric_names(result: CompareResult) -> list[str]:
    """Metric names over the ok variants in first-seen order, the primary metric first."""
    names = dict.fromkeys(m for v in result.ok() for m in v.metrics)
    return sorted(names, key=lambda m: m != result.primary_metric)


def _variant_label(variant: VariantResult, result: CompareResult) -> str:
    """The variant's name, marked "(baseline)" or "(failed)"."""
    if variant.status != "ok":
        return f"{variant.name} ({variant.status})"
    return variant.name + (" (baseline)" if variant.name == result.baseline else "")


def _mark(metric: str, comparison: Comparison | None) -> str:
    """▲ for a significant improvement over the baseline, ▼ for a significant regression, else nothing; a cost
    metric's significant difference is "lower" or "higher" (no arrow: a cost is no quality)."""
    if comparison is None or not comparison.significant or not comparison.delta:
        return ""
    if metric in COST_METRICS:
        return "lower" if comparison.delta < 0 else "higher"
    return _BETTER if comparison.delta > 0 else _WORSE


def _cost(value: float | None) -> str:
    """A cost in three significant digits, whole numbers from 1,000 on: 0.123, 45.7, 572, 1,234."""
    if value is None:
        return _MISSING
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _metric_cell(variant: VariantResult, metric: str) -> str:
    if metric not in variant.metrics:
        return _MISSING
    mark = _mark(metric, variant.compared_to_baseline.get(metric))
    return f"{variant.metrics[metric]:.3f} {mark}".rstrip()


def _variant_table(result: CompareResult) -> _Table:
    """One row per variant (a failed one named so, with empty cells): its quality metrics (the primary one first;
    ▲ / ▼ against the baseline), then its costs (ms/question and the :data:`COST_METRICS`)."""
    metrics = _metric_names(result)
    quality = [m for m in metrics if m not in COST_METRICS]
    costs = [m for m in metrics if m in COST_METRICS]
    rows = []
    for v in result.variants:
        cells = [_variant_label(v, result)]
        if v.status == "ok":
            cells += [_metric_cell(v, m) for m in quality]
            cells += [_cost(v.ms_per_question), *(_cost(v.metrics.get(m)) for m in costs)]
        else:
            cells += [""] * (len(quality) + 1 + len(costs))
        rows.append(cells)
    header = ["variant", *quality, "ms/question", *(COST_METRICS[m] for m in costs)]
    groups = [("", 1), ("quality", len(quality)), (_COST_GROUP, 1 + len(costs))]
    return _Table(header, rows, set(range(1, len(header))), groups)


def _test_name(significance: Significance) -> str:
    return _TEST_NAMES[significance.test]


def _rule(significance: Significance) -> str:
    """The significance rule, e.g. "Fisher's randomization test, 1000 permutations, Holm's correction, p ≤ 0.05"."""
    permutations = f", {significance.n_permutations} permutations" if significance.n_permutations else ""
    correction = _CORRECTION_NAMES[significance.correction]
    return f"{_test_name(significance)}{permutations}, {correction}, p ≤ {significance.max_p}"


def _legend(result: CompareResult) -> str:
    costs = ", ".join(["ms/question", *(label for m, label in COST_METRICS.items() if m in _metric_names(result))])
    return (
        f"{_BETTER} / {_WORSE}: significantly better / worse than the baseline {result.baseline} "
        f"({_rule(result.significance)}); {result.n_questions} questions. Costs ({costs}): lower is better."
    )


def _significance_rows(result: CompareResult, metrics: set[str] | None = None) -> list[list[str]]:
    """(variant, metric, delta, p-value, adjusted p-value, mark) of every test against the baseline, or of those
    on ``metrics``."""
    return [
        [v.name, metric, f"{c.delta:+.4f}", f"{c.p_value:.4f}", f"{c.p_adjusted:.4f}", _mark(metric, c)]
        for v in result.ok()
        for metric, c in v.compared_to_baseline.items()
        if metrics is None or metric in metrics
    ]


def _significance_header(result: CompareResult) -> list[str]:
    return ["variant", "metric", "delta", "p-value", f"p-value ({result.significance.correction})", "significant"]


def _significance_blocks(result: CompareResult) -> list[_Block]:
    """The primary metric's tests against the baseline, every metric's folded under them."""
    every = _significance_rows(result)
    if not every:
        return [("p", f"No variant could be compared with the baseline {result.baseline}.")]
    header = _significance_header(result)
    primary = [[name, *cells] for name, _, *cells in _significance_rows(result, {result.primary_metric})]
    compact = [header[0], f"delta {result.primary_metric}", *header[3:]]
    blocks: list[_Block] = [("table", _Table(compact, primary, {1, 2, 3}))] if primary else []
    summary = f"Every metric against the baseline: {len(every)} tests, each metric corrected over the variants"
    return blocks + [("details", (summary, [("table", _Table(header, every, {2, 3, 4}))]))]


def _node_table(result: CompareResult) -> _Table:
    rows = [
        [
            v.name,
            node,
            info.type,
            _cost(info.cost_s),
            _cost(info.ms_per_question),
            "yes" if info.cached else "",
            ", ".join(info.shared_with),
            info.fingerprint[:12],
        ]
        for v in result.ok()
        for node, info in v.nodes.items()
    ]
    header = ["variant", "node", "type", "cost s", "ms/question", "cached", "shared with", "fingerprint"]
    return _Table(header, rows, {3, 4})


def _union_table(union: UnionStats) -> _Table:
    rows = [
        ["node runs in the variants", str(union.variant_nodes)],
        ["distinct nodes", str(union.distinct_nodes)],
        ["runs saved by sharing", str(union.variant_nodes - union.distinct_nodes)],
        ["nodes computed", str(union.computed_nodes)],
        ["runs saved by the cache", str(union.cached_nodes)],
        ["wall time actually spent", f"{union.wall_s:.1f} s (costs count every node as if its variant ran alone)"],
        ["warm-up", f"{union.warm_up_s:.1f} s"],
    ]
    return _Table(["quantity", "value"], rows, {1})


def _run_table(result: CompareResult) -> _Table:
    rows = [
        ["dataset", result.dataset],
        ["split", result.split],
        ["questions", result.n_questions],
        ["index", result.index],
        ["baseline", result.baseline],
        ["primary metric", result.primary_metric],
        ["significance", _rule(result.significance)],
        ["created", result.created],
        ["hopstack", result.hopstack_version],
    ]
    return _Table(["setting", "value"], [[name, _MISSING if value is None else str(value)] for name, value in rows])


_MD_SPECIAL = re.compile(r"([\\`*<|])")


def _md_text(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _md_table(table: _Table) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(_md_text(c) for c in cells) + " |"

    rule = ["---:" if i in table.numeric else "---" for i in range(len(table.header))]
    return [line(table.header), "| " + " | ".join(rule) + " |", *map(line, table.rows)]


def _to_markdown(blocks: list[_Block], files: dict[str, Path] | None = None) -> str:
    """Markdown for the blocks; images link to the PNG files beside the report, folded blocks are in a
    ``<details>`` element (as GitHub renders it)."""
    out: list[str] = []
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3"):
            lines = ["#" * int(kind[1]) + " " + _md_text(payload)]
        elif kind == "p":
            lines = [_md_text(payload)]
        elif kind == "list":
            lines = ["- " + _md_text(item) for item in payload]
        elif kind == "pre":
            fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", payload)), default=0))
            lines = [fence, payload.rstrip("\n"), fence]
        elif kind == "table":
            lines = _md_table(payload)
        elif kind == "details":
            summary, inner = payload
            folded = _to_markdown(inner, files).rstrip("\n")
            lines = [f"<details><summary>{html.escape(summary)}</summary>", "", folded, "", "</details>"]
        else:
            key, alt = payload
            lines = [f"![{_md_text(alt)}]({files[key].name})"]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def _html_table(table: _Table) -> str:
    """The table in a box that scrolls sideways rather than the page; headers may wrap before "@" and after "/",
    cells after "," and "["; a group after the first has a rule on its left."""
    firsts = [sum(span for _, span in table.groups[:i]) for i in range(len(table.groups))]
    starts = set(firsts[1:])

    def cell(tag: str, i: int, text: str) -> str:
        classes = " ".join(name for name, on in (("num", i in table.numeric), ("start", i in starts)) if on)
        attribute = f' class="{classes}"' if classes else ""
        content = html.escape(text)
        if tag == "th":
            content = content.replace("@", "<wbr>@").replace("/", "/<wbr>")
        else:  # a grid variant's name breaks between its parameters first
            content = content.replace(",", ",<wbr>").replace("[", "[<wbr>")
        return f"<{tag}{attribute}>{content}</{tag}>"

    def row(tag: str, cells: list[str]) -> str:
        return "<tr>" + "".join(cell(tag, i, c) for i, c in enumerate(cells)) + "</tr>"

    groups = "".join(
        f'<th colspan="{span}" class="group{" start" if first in starts else ""}">{html.escape(label)}</th>'
        for (label, span), first in zip(table.groups, firsts)
    )
    head = (f"<tr>{groups}</tr>" if groups else "") + row("th", table.header)
    body = "".join(row("td", r) for r in table.rows)
    return f'<div class="table"><table><thead>{head}</thead><tbody>{body}</tbody></table></div>'


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 90rem;
       padding: 0 1rem; color: #222; line-height: 1.45; }
p, ul, pre, summary { max-width: 72rem; }
div.table { overflow-x: auto; margin: 0.5rem 0 1rem; }
table { border-collapse: collapse; font-size: 0.8rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.3rem; text-align: left; vertical-align: top; }
thead th { background: #f0f0f0; vertical-align: bottom; }
th.group { text-align: center; }
th.start, td.start { border-left: 2px solid #888; }
tbody tr:nth-child(even) { background: #fafafa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
td:first-child { overflow-wrap: anywhere; min-width: 7rem; }
details { margin: 0.5rem 0 1rem; }
summary { cursor: pointer; }
pre { background: #f6f6f6; border: 1px solid #ddd; padding: 0.6rem; overflow-x: auto; white-space: pre-wrap; }
img { max-width: min(100%, 64rem); height: auto; display: block; margin: 0.5rem 0 1rem; }
"""


def _html_blocks(blocks: list[_Block], files: dict[str, Path]) -> list[str]:
    body = []
    for kind, payload in blocks:
        if kind in ("h1", "h2", "h3", "p"):
            body.append(f"<{kind}>{html.escape(payload)}</{kind}>")
        elif kind == "list":
            body.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in payload) + "</ul>")
        elif kind == "pre":
            body.append(f"<pre>{html.escape(payload)}</pre>")
        elif kind == "table":
            body.append(_html_table(payload))
        elif kind == "details":
            summary, inner = payload
            folded = "\n".join(_html_blocks(inner, files))
            body.append(f"<details><summary>{html.escape(summary)}</summary>\n{folded}\n</details>")
        else:
            key, alt = payload
            data = base64.b64encode(files[key].read_bytes()).decode("ascii")
            body.append(f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">')
    return body


def _to_html(blocks: list[_Block], files: dict[str, Path], title: str) -> str:
    """One self-contained HTML page for the blocks: inline CSS, images as base64 data URIs."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(_html_blocks(blocks, files))
        + "\n</body>\n</html>\n"
    )


def markdown_table(result: CompareResult) -> str:
    """A GitHub-flavoured Markdown table with one row per variant (quality metrics and costs) and a legend line
    under it; ▲ / ▼ mark significant improvements / regressions against the baseline."""
    return _to_markdown([("table", _variant_table(result)), ("p", _legend(result))])


def significance_table(result: CompareResult) -> str:
    """A Markdown table of every (variant, metric) against the baseline: the delta, the raw p-value and the p-value
    after the multiple-comparison correction (named in the column's header)."""
    return _to_markdown([("table", _Table(_significance_header(result), _significance_rows(result), {2, 3, 4}))])


def _quality_points(result: CompareResult) -> list[VariantResult]:
    """The ok variants that have both the primary metric and a cost."""
    return [v for v in result.ok() if result.primary_metric in v.metrics and v.ms_per_question is not None]


def _timed_variants(result: CompareResult) -> list[VariantResult]:
    return [v for v in result.ok() if v.nodes]


_NEAR = [(8, 0), (-8, 0), (6, 10), (-6, 10), (6, -10), (-6, -10), (0, 15), (0, -15)]
_OFFSETS = _NEAR + [
    *[(25, 18), (25, -18), (-25, 18), (-25, -18), (0, 30), (0, -30), (40, 0), (-40, 0)],
    *[(45, 40), (45, -40), (-45, 40), (-45, -40), (0, 55), (0, -55), (70, 0), (-70, 0)],
]
"""Where a point's label may go, in points from it, tried in order; beyond _NEAR a line leads to the point."""
_LEADER = dict(arrowstyle="-", color="#888", lw=0.6, shrinkB=5)


def _try_label(axes, xy: tuple[float, float], text: str, taken: list, renderer, **style) -> bool:
    """Annotate ``xy`` at the first offset where the label stays inside the axes and overlaps nothing in ``taken``
    (display boxes, extended with the label's); False, and nothing drawn, when none fits."""
    frame = axes.get_window_extent(renderer)
    for dx, dy in _OFFSETS:
        place = dict(xytext=(dx, dy), textcoords="offset points", va="center", **style)
        place["ha"] = "center" if dx == 0 else "left" if dx > 0 else "right"
        note = axes.annotate(text, xy, **place)  # measured without the leader line, which ends at the point
        box = note.get_window_extent(renderer).padded(2)
        note.remove()
        inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
        if inside and not any(box.overlaps(other) for other in taken):
            axes.annotate(text, xy, arrowprops=None if (dx, dy) in _NEAR else _LEADER, **place)
            taken.append(box)
            return True
    return False


def _place_labels(axes, labels: list[tuple[float, float, str]], taken: list, renderer, **style) -> list[str]:
    """Label each point near it without overlaps. A label that does not fit is replaced by a number, drawn only
    where it fits too; the returned key lines ("1: name (y at x ms)") say which point is which."""
    key: list[str] = []
    for x, y, text in labels:
        if not _try_label(axes, (x, y), text, taken, renderer, **style):
            key.append(f"{len(key) + 1}: {text} ({y:.4f} at {x:.3g} ms)")
            _try_label(axes, (x, y), str(len(key)), taken, renderer, **style)
    return key


def _about(result: CompareResult) -> str:
    return f"{result.dataset} ({result.split}, {result.n_questions} questions)"


def plot_quality_latency(result: CompareResult, path: str | Path) -> Path:
    """Scatter the primary metric (y) against ms/question (x, log scale when it spans more than 10x) into a PNG,
    one labelled point per ok variant; the baseline is a star, the colours tell significance on the primary
    metric. Labels that would overlap are replaced by numbers, with a key beside the plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

    # the baseline first: its label gets the best place
    points = sorted(_quality_points(result), key=lambda v: v.name != result.baseline)
    if not points:
        raise ValueError("no variant has both the primary metric and a cost to plot")
    primary, path = result.primary_metric, Path(path)
    # no layout engine: the axes must not move once the labels are placed; bbox_inches="tight" adds the margins
    figure = Figure(figsize=(8, 5.5), dpi=120)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    xs = [v.ms_per_question for v in points]
    log = min(xs) > 0 and max(xs) > 10 * min(xs)
    styles = {
        "baseline": dict(marker="*", s=260, color="#1f4e9c", alpha=0.75, zorder=2),  # under the points it hides
        _BETTER: dict(marker="o", s=70, color="#2a9d3f", zorder=3),
        _WORSE: dict(marker="o", s=70, color="#d1495b", zorder=3),
        "": dict(marker="o", s=70, color="#8a8a8a", zorder=3),
    }
    names = {
        "baseline": f"baseline ({result.baseline})",
        _BETTER: "significantly better",
        _WORSE: "significantly worse",
        "": "no significant difference",
    }
    sizes = []
    for v in points:
        is_baseline = v.name == result.baseline
        mark = _mark(primary, v.compared_to_baseline.get(primary))  # a lower cost is the better one
        group = "baseline" if is_baseline else {"lower": _BETTER, "higher": _WORSE}.get(mark, mark)
        axes.scatter(v.ms_per_question, v.metrics[primary], label=names.pop(group, None), **styles[group])
        sizes.append(styles[group]["s"])
    if log:
        axes.set_xscale("log")
    axes.margins(x=0.15, y=0.15)
    axes.set_xlabel("ms per question" + (" (log scale)" if log else ""))
    axes.set_ylabel(primary)
    axes.set_title(f"{primary} against cost: {_about(result)}")
    axes.grid(True, which="major", alpha=0.3)
    legend = axes.legend(loc="best", fontsize=8, framealpha=0.9)
    canvas.draw()
    renderer = canvas.get_renderer()
    labels = [(v.ms_per_question, v.metrics[primary], _variant_label(v, result)) for v in points]
    taken = [legend.get_window_extent(renderer)]
    for (x, y, _), size in zip(labels, sizes):
        radius = size**0.5 / 2 * figure.dpi / 72  # a scatter size is the marker's area in points²
        centre = axes.transData.transform((x, y))
        taken.append(Bbox.from_bounds(*(centre - radius), 2 * radius, 2 * radius))
    key = _place_labels(axes, labels, taken, renderer, fontsize=8)
    if key:
        axes.text(1.02, 1, "\n".join(key), transform=axes.transAxes, va="top", fontsize=8)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


def plot_node_times(result: CompareResult, path: str | Path) -> Path:
    """Horizontal stacked bars of the nodes' costs (as if each variant ran alone), one bar per ok variant, into a
    PNG: one colour per node name, nodes shared with other variants hatched, cached nodes labelled " (cached)"
    in the legend."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    variants = _timed_variants(result)
    if not variants:
        raise ValueError("no variant has node timings to plot")
    path = Path(path)
    node_names = list(dict.fromkeys(node for v in variants for node in v.nodes))
    palette = [f"C{i}" for i in range(10)]
    colours = {node: palette[i % len(palette)] for i, node in enumerate(node_names)}
    # no layout engine: bbox_inches="tight" widens the figure for long variant names instead of narrowing the bars
    figure = Figure(figsize=(8, 1.6 + 0.45 * len(variants)), dpi=120)
    axes = figure.add_subplot()
    legend: dict[str, Patch] = {}
    totals = []
    for row, v in enumerate(variants):
        left = 0.0
        for node, info in v.nodes.items():
            label = node + (" (cached)" if info.cached else "")
            hatch = "///" if info.shared_with else None
            axes.barh(row, info.cost_s, left=left, color=colours[node], hatch=hatch, edgecolor="white", height=0.6)
            legend.setdefault(label, Patch(facecolor=colours[node], label=label))
            left += info.cost_s
        cached = sum(info.cached for info in v.nodes.values())
        totals.append((left, f" {left:.2f} s" + (f" ({cached} cached)" if cached else "")))
    for row, (total, text) in enumerate(totals):
        axes.text(total, row, text, va="center", fontsize=8)
    if any(info.shared_with for v in variants for info in v.nodes.values()):
        legend["shared"] = Patch(facecolor="white", edgecolor="#555", hatch="///", label="shared with other variants")
    axes.set_yticks(range(len(variants)), [_variant_label(v, result) for v in variants], fontsize=9)
    axes.invert_yaxis()
    axes.set_xlim(0, max(total for total, _ in totals) * 1.25 or 1)
    axes.set_xlabel("node cost (s): a shared or cached node counts in full, what it took when computed")
    axes.set_title(f"Time per node: {_about(result)}")
    axes.grid(True, axis="x", alpha=0.3)
    axes.legend(handles=list(legend.values()), loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="node")
    figure.savefig(path, format="png", bbox_inches="tight")
    return path


_PLOTS = {
    "quality_latency": ("primary metric against ms per question", plot_quality_latency, _quality_points),
    "node_times": ("cost per node and variant", plot_node_times, _timed_variants),
}
"""The plots of a report by key: alternative text, the function that draws it, the variants it shows."""


def _plot_block(key: str, files: dict[str, Path]) -> _Block:
    """The plot, or why there is none (every variant that had the data for it failed)."""
    alt = _PLOTS[key][0]
    if key in files:
        return ("image", (key, alt))
    return ("p", f"No plot of {alt}: no variant that finished has the data for it.")


def _report_blocks(result: CompareResult, files: dict[str, Path]) -> list[_Block]:
    """The report: the results table and the quality/cost plot first, the primary metric's tests (every metric's
    folded), failures and warnings, then where the time went and how the run was set up."""
    failed = [v for v in result.variants if v.status != "ok"]
    n = len(result.variants)
    blocks: list[_Block] = [
        ("h1", f"Comparison of {n} pipeline variant{'s' * (n != 1)} on {result.dataset}"),
        ("h2", "Results"),
        ("table", _variant_table(result)),
        ("p", _legend(result)),
        _plot_block("quality_latency", files),
        ("p", f"Each variant's answer, document ids and metrics, question by question: {files['per_question'].name}"),
        ("h2", "Against the baseline"),
        *_significance_blocks(result),
    ]
    if failed:
        blocks.append(("h2", "Failed variants"))
        for v in failed:
            blocks += [("h3", f"{v.name} ({v.pipeline})"), ("pre", v.error or "no error message")]
    warnings = result.warnings + [f"{v.name}: {w}" for v in result.variants for w in v.warnings]
    if warnings:
        blocks += [("h2", "Warnings"), ("list", warnings)]
    blocks += [("h2", "Time per node"), _plot_block("node_times", files)]
    if _timed_variants(result):
        rows = _node_table(result)
        blocks.append(("details", (f"Node timings: {len(rows.rows)} nodes of the variants", [("table", rows)])))
    blocks += [("h2", "Shared and cached nodes"), ("table", _union_table(result.union))]
    return blocks + [("h2", "Run"), ("table", _run_table(result))]


def per_question_rows(result: CompareResult) -> list[dict[str, Any]]:
    """One JSON-safe row per question (``per_question.jsonl``): its id, text, type, gold answers and gold document
    ids, and under ``variants`` for each variant that ran its answer (None without an answer output), the ranked
    source-document ids it returned and its metrics on the question."""
    ran = [v for v in result.variants if v.run is not None]
    return [
        {
            "id": question.id,
            "question": question.question,
            "question_type": question.question_type,
            "gold_answers": question.answers,
            "gold_ids": question.gold_ids,
            "variants": {
                v.name: {
                    "answer": v.run.answers[i],
                    "document_ids": v.run.document_ids[i],
                    "metrics": {metric: values[i] for metric, values in v.run.scored.per_query.items()},
                }
                for v in ran
            },
        }
        for i, question in enumerate(result.questions)
    ]


def new_run_folder(root: str | Path, dataset: str) -> Path:
    """A new, empty folder under ``root`` for one run's report, named after the dataset and the time
    (``multihop-rag-20261130-091500``; ``-2``, ``-3``, ... when a run of the same second has the name), so that
    no run's report replaces another's."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    stem = f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', dataset).strip('-.') or 'dataset'}-{time.strftime('%Y%m%d-%H%M%S')}"
    folder, n = root / stem, 1
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            n += 1
            folder = root / f"{stem}-{n}"


def write_report(result: CompareResult, out_dir: str | Path) -> dict[str, Path]:
    """Write ``results.json`` (:meth:`CompareResult.to_json`), ``per_question.jsonl`` (:func:`per_question_rows`),
    ``report.md``, the two PNG plots and a self-contained ``report.html`` into ``out_dir`` (created if needed).
    Returns the paths by key: json, per_question, markdown, html, quality_latency and node_times; a plot with
    nothing to show (every variant failed) is skipped, left out of the dict and mentioned in the reports."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "results.json", "per_question": out_dir / "per_question.jsonl"}
    files["json"].write_text(json.dumps(result.to_json(), indent=2) + "\n", encoding="utf-8")
    rows = per_question_rows(result)
    files["per_question"].write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), "utf-8")
    for key, (_, plot, shown) in _PLOTS.items():
        if shown(result):
            files[key] = plot(result, out_dir / f"{key}.png")
    blocks = _report_blocks(result, files)
    files["markdown"] = out_dir / "report.md"
    files["markdown"].write_text(_to_markdown(blocks, files), encoding="utf-8")
    files["html"] = out_dir / "report.html"
    files["html"].write_text(_to_html(blocks, files, blocks[0][1]), encoding="utf-8")
    return files
