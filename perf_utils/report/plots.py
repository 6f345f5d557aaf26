"""Figures for the report (matplotlib, no display needed): a reader should see at a glance what regressed.

Each figure has one panel per batch size (or per configuration, for trends); a regressed benchmark is drawn
and labelled in red. Panel titles are also written into the PNG's `Description`, so a saved figure says
what it shows.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.patches import Patch

from perf_utils.gate.compare import IMPROVED, LOST, REGRESSED, Comparison
from perf_utils.gate.trends import Trend
from perf_utils.record.metrics import METRICS, STAGE_METRICS, STAGES
from perf_utils.record.record import RunRecord
from perf_utils.report.blog import throughput_by_batch_size

COLOURS = {REGRESSED: "#d62728", LOST: "#d62728", IMPROVED: "#2ca02c", "now": "#1f77b4", "baseline": "#9a9a9a"}
STAGE_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52")


def _verdicts(comparison: Comparison | None) -> dict[str, str]:
    return {v.id: v.verdict for v in comparison.verdicts} if comparison else {}


def _new_figure(panels: int, rows_per_panel: int, columns: int = 0) -> tuple[Figure, list]:
    columns = columns or panels
    rows = -(-panels // columns)
    fig = Figure(
        figsize=((6.2 if columns < 3 else 4.6) * columns, 1.0 + 0.45 * max(rows_per_panel, 3) * rows),
        layout="constrained",
    )
    axes = fig.subplots(rows, columns, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def spread_figure(
    record: RunRecord,
    metric: str,
    baseline: RunRecord | None = None,
    comparison: Comparison | None = None,
    scale: str = "",
) -> Figure:
    """Per configuration: now against the baseline file, every round as a dot and the median as a bar. `scale`:
    the axis's unit when the values are not as measured."""
    info = METRICS[metric]
    sizes = record.batch_sizes()
    verdicts = _verdicts(comparison)
    changes = {v.id: v.metric(metric) for v in comparison.verdicts} if comparison else {}
    base = baseline.by_id() if baseline else {}
    height = max((len(record.measured(b)) for b in sizes), default=1)
    fig, axes = _new_figure(len(sizes), height)
    for ax, bs in zip(axes, sizes, strict=True):
        results = [r for r in record.measured(bs) if r.values(metric)]
        lost = [base[i] for i, v in verdicts.items() if v == LOST and i in base and base[i].batch_size == bs]
        results += [r for r in lost if r.values(metric)]  # drawn from the baseline alone, labelled LOST
        for y, r in enumerate(results):
            verdict = verdicts.get(r.id, "")
            colour = COLOURS.get(verdict, COLOURS["now"])
            old = base.get(r.id)
            if old is not None and old.ran and old.values(metric):
                vals = old.values(metric)
                ax.barh(y + 0.2, old.summary(metric).median, height=0.35, color=COLOURS["baseline"], alpha=0.45)
                ax.plot(vals, [y + 0.2] * len(vals), "o", ms=3, color=COLOURS["baseline"])
            if verdict == LOST:
                ax.annotate(
                    " LOST", (max(r.values(metric)), y + 0.2), va="center", color=colour, fontsize=8, weight="bold"
                )
                continue
            vals = r.values(metric)
            median = r.summary(metric).median
            ax.barh(y - 0.2, median, height=0.35, color=colour, alpha=0.55)
            ax.plot(vals, [y - 0.2] * len(vals), "o", ms=3, color=colour)
            change = changes.get(r.id)
            if change is not None and verdict in (REGRESSED, IMPROVED):
                label = f" {change.change:+.0%} {verdict.upper() if verdict == REGRESSED else verdict}"
                ax.annotate(label, (max(vals), y - 0.2), va="center", color=colour, fontsize=8, weight="bold")
        ax.set_yticks(range(len(results)), [r.config for r in results])
        for tick, r in zip(ax.get_yticklabels(), results, strict=True):
            if verdicts.get(r.id) in (REGRESSED, LOST):
                tick.set_color(COLOURS[REGRESSED])
                tick.set_fontweight("bold")
        ax.invert_yaxis()
        ax.set_xlabel(f"{info.label} ({scale or info.unit})")
        ax.set_title(f"{info.label}, batch {bs}")
        ax.grid(axis="x", alpha=0.3)
        ax.margins(x=0.25)
    legend = (
        "now (colour; red = regressed or lost) vs baseline (grey); dots are rounds" if baseline else "dots are rounds"
    )
    if baseline:
        fig.legend(
            handles=[
                Patch(color=COLOURS["now"], alpha=0.55, label="now"),
                Patch(color=COLOURS["baseline"], alpha=0.45, label="baseline"),
            ],
            loc="outside lower center",
            ncols=2,
            fontsize=8,
        )
    fig.suptitle(f"{info.label} per configuration: {legend}", fontsize=10)
    return fig


def stages_figure(record: RunRecord) -> Figure:
    """Where the time of one call goes: median seconds per sub-model, stacked."""
    sizes = record.batch_sizes()
    height = max((len(record.measured(b)) for b in sizes), default=1)
    fig, axes = _new_figure(len(sizes), height)
    for ax, bs in zip(axes, sizes, strict=True):
        results = [r for r in record.measured(bs) if r.values(STAGE_METRICS[0])]
        left = [0.0] * len(results)
        for stage, metric, colour in zip(STAGES, STAGE_METRICS, STAGE_COLOURS, strict=True):
            widths = [r.summary(metric).median if r.values(metric) else 0.0 for r in results]
            ax.barh(range(len(results)), widths, left=left, color=colour, label=stage)
            left = [a + b for a, b in zip(left, widths, strict=True)]
        ax.set_yticks(range(len(results)), [r.config for r in results])
        ax.invert_yaxis()
        ax.set_xlabel("median seconds per call")
        ax.set_title(f"per-stage time, batch {bs}")
        ax.grid(axis="x", alpha=0.3)
    if axes:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8)
    fig.suptitle("where the time goes: semantic, coarse, fine, codec", fontsize=10)
    return fig


def batching_figure(record: RunRecord) -> Figure:
    """The blog's batching question: throughput (median samples/s) against batch size, a line per configuration;
    where a line flattens, a larger batch stops paying."""
    fig = Figure(figsize=(6.2, 3.6), layout="constrained")
    ax = fig.subplots()
    for config, points in throughput_by_batch_size(record).items():
        measured_at = sorted(points)
        ax.plot(measured_at, [points[b] for b in measured_at], marker="o", label=config)
    ax.set_xscale("log", base=2)
    sizes = record.batch_sizes()
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples/s (median)")
    ax.set_title("throughput by batch size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.suptitle("where does throughput stop growing with the batch?", fontsize=10)
    return fig


def trend_figure(trends: list[Trend], metric: str, per_host_probe: bool = False) -> Figure:
    """One panel per configuration, a line per batch size: each run's median relative to the series' first
    level (1.0 = where it started, so batch sizes share a scale), the rounds' range shaded, the steps a reader
    is shown (`Trend.marked`) dashed; a panel with a regressed trend has a red title. `per_host_probe`: the series
    are (the title says so)."""
    info = METRICS[metric]
    mine = [t for t in trends if t.metric == metric and t.points]
    configs = list(dict.fromkeys(t.benchmark.split("-", 1)[1] for t in mine))
    fig, axes = _new_figure(len(configs), 4, columns=min(3, len(configs)) or 1)
    for ax, config in zip(axes, configs, strict=True):
        regressed = False
        for t in (t for t in mine if t.benchmark.split("-", 1)[1] == config):
            ref = t.levels()[0]
            xs = range(len(t.points))
            label = t.benchmark.split("-", 1)[0]
            line = ax.plot(xs, [p.median / ref for p in t.points], "o-", ms=3, label=label)[0]
            low, high = [p.low / ref for p in t.points], [p.high / ref for p in t.points]
            ax.fill_between(xs, low, high, alpha=0.15, color=line.get_color())
            for step in t.marked:
                ax.axvline(step - 0.5, ls="--", lw=1, color=line.get_color())
            regressed = regressed or t.verdict == REGRESSED
        ax.set_title(config + ("  REGRESSED" if regressed else ""), color=COLOURS[REGRESSED] if regressed else "black")
        ax.axhline(1.0, lw=0.8, color="black", alpha=0.4)
        ax.set_xlabel("run (oldest to latest)")
        ax.set_ylabel("x first level")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"{info.label}{' per host probe' if per_host_probe else ''} over the kept runs, relative to where each series "
        "started (dashed: a level change past the threshold)",
        fontsize=10,
    )
    return fig


def save(fig: Figure, path: Path) -> Path:
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, metadata={"Title": fig.get_suptitle(), "Description": " | ".join(titles)})
    return path
