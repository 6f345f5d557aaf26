"""The report of one run: a folder with the run's JSON, a Markdown report and PNG figures.

The Markdown leads with the verdict, then the tables in the shape of the optimizing-bark blog post (each
configuration against `fp32` in the same run, per batch size), where the time goes per stage, what could
not run and why, what each verdict other than unchanged was built from (`details`), and the history of kept
runs. Every number in it is read from the run record itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure
from tabulate import tabulate

from perf_utils.gate import trends
from perf_utils.gate.compare import IMPROVED, NOISY, REGRESSED, Comparison
from perf_utils.gate.decide import NOT_ASKED, GateOutcome
from perf_utils.gate.thresholds import Thresholds
from perf_utils.gate.trends import History, Trend
from perf_utils.record.fidelity import NOT_CHECKED
from perf_utils.record.metrics import HOST_ALLOC_PEAK, STAGE_METRICS, STAGES
from perf_utils.record.ratios import vs_reference
from perf_utils.record.record import REFERENCE_CONFIG, STACK_PACKAGES, BenchmarkResult, RunRecord, benchmark_id
from perf_utils.record.store import KeptRun
from perf_utils.report import blog, details, plots
from perf_utils.report.table import VERDICT_MARKDOWN, markdown_verdict, moved_most, num

REPORT_FILE = "report.md"
FIGURES_HEADING = "## Figures"


@dataclass
class WrittenReport:
    folder: Path
    markdown: Path
    figures: dict[str, Path] = field(default_factory=dict)
    trends: list[Trend] = field(default_factory=list)
    text: str = ""

    @property
    def summary(self) -> str:
        """For GitHub's job summary, which cannot show the run's own image files: the report without them."""
        body = self.text.split(FIGURES_HEADING)[0].rstrip()
        return f"{body}\n\nFigures and the run's JSON: `{self.folder}` (kept as the job's artifact).\n\n"


def _median(result: BenchmarkResult | None, metric: str) -> float | None:
    return result.median(metric) if result is not None else None


def _vs(result: BenchmarkResult, reference: BenchmarkResult | None, metric: str) -> str:
    """The change against fp32 (`record.ratios.vs_reference`); fp32's own row shows a dash."""
    if result is reference:
        return "—"
    change = vs_reference(result, reference, metric)
    return "-" if change is None else f"{change:+.0%}"


def fidelity_cell(result: BenchmarkResult) -> str:
    fid = result.fidelity
    if not fid:
        return "-"
    if fid.passed is None:
        return NOT_CHECKED
    if fid.passed is False:
        return "**FAIL**: " + "; ".join(fid.problems)
    worst = fid.worst_rel_err
    return "ok" if worst == 0 else f"ok (rel. err. {worst:.1e})"


def blog_table(record: RunRecord, batch_size: int, comparison: Comparison | None = None) -> str:
    """Latency, peak memory and throughput per configuration, with the change against `fp32` in this run."""
    mem = record.memory_metric()
    results = record.measured(batch_size)
    ref = record.by_id().get(benchmark_id(REFERENCE_CONFIG, batch_size))
    verdicts = {v.id: v.verdict for v in comparison.verdicts} if comparison else {}
    rows = []
    for r in results:
        lat, peak, sps = (_median(r, m) for m in ("latency_s", mem, "throughput_sps"))
        row = [
            r.config,
            num(lat, ".3f"),
            _vs(r, ref, "latency_s"),
            num(peak, ".1f"),
            _vs(r, ref, mem),
            num(sps, ".2f"),
            _vs(r, ref, "throughput_sps"),
            fidelity_cell(r),
        ]
        if comparison:
            row.append(VERDICT_MARKDOWN.get(verdicts.get(r.id, ""), verdicts.get(r.id, "-")))
        rows.append(row)
    peak_label = {"accel_peak_mb": "GPU peak MB", HOST_ALLOC_PEAK: "host alloc peak MB"}.get(mem, "host RSS rise MB")
    vs = f"vs {REFERENCE_CONFIG}"
    headers = ["configuration", "latency s", vs, peak_label, vs, "samples/s", vs]
    headers += ["fidelity", *(["gate"] if comparison else [])]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def stages_table(record: RunRecord, comparison: Comparison | None = None) -> str:
    """Each stage's median seconds per call and share of their sum; against a baseline, each stage's change too,
    as the gate judged time (per host probe where it did), and in bold, where latency changed, the stage that made
    most of it (`BenchmarkVerdict.moved_most`): Bark is four models, and a regression is looked for in that one."""
    verdicts = {v.id: v for v in comparison.verdicts} if comparison else {}
    rows = []
    for r in (r for r in record.measured() if r.values(STAGE_METRICS[0])):
        stages = [_median(r, m) or 0.0 for m in STAGE_METRICS]
        total = sum(stages)
        cells = [f"{s:.3f} ({s / total:.0%})" for s in stages]
        if (v := verdicts.get(r.id)) is not None:
            latency, most = v.metric("latency_s"), v.moved_most()
            called = latency is not None and latency.verdict in (REGRESSED, IMPROVED)
            for i, m in enumerate(v.metric(name) for name in STAGE_METRICS):
                if m is not None:
                    cells[i] += f" {m.change:+.0%}"
                    cells[i] = f"**{cells[i]}**" if called and m is most else cells[i]
        rows.append([r.id, *cells, f"{total:.3f}"])
    return tabulate(rows, headers=["benchmark", *STAGES, "sum s"], tablefmt="github", disable_numparse=True)


def _stages_heading(comparison: Comparison | None) -> str:
    against = "; change against the baseline; in bold, where latency changed, the stage that made most of it"
    against = against if comparison else ""
    return f"## Where the time goes (median s per call, share of the sum{against})"


def unavailable_table(record: RunRecord) -> str:
    """One row per reason, with every configuration it stopped: combinations share their parts' reasons (on a CPU
    four reasons stop eight configurations), and a long reason is read once."""
    stopped: dict[str, list[str]] = {}
    for r in record.results:
        if not r.ran and r.config not in (names := stopped.setdefault(f"{r.status}: {r.reason}", [])):
            names.append(r.config)
    rows = sorted((", ".join(names), why) for why, names in stopped.items())
    return tabulate(rows, headers=["configurations", "why"], tablefmt="github")


def history_section(history: History, runs: int, skipped: list[str]) -> str:
    called_trends = history.trends
    if runs < trends.MIN_RUNS:
        text = f"{runs} comparable run(s) kept; trends are called from {trends.MIN_RUNS}."
    else:
        called = [t for t in called_trends if t.verdict in (REGRESSED, IMPROVED)]
        text = f"{runs} comparable runs kept. "
        text += f"{len(called)} trend(s) called:" if called else "No step, drift or outlier beyond the thresholds."
        if called:
            rows = [[VERDICT_MARKDOWN[t.verdict], t.benchmark, t.metric, t.why] for t in called]
            text += "\n\n" + tabulate(rows, headers=["trend", "benchmark", "metric", "why"], tablefmt="github")
    if history.per_host_probe and runs >= trends.MIN_RUNS:
        text += (
            "\n\nLatency and throughput per host probe, as the gate judges time here: each run at this run's host "
            "speed, so a machine slower for every program is not a step"
            + (f" ({history.without_probe} run(s) without the probe left out of them)" if history.without_probe else "")
            + "."
        )
    if skipped:
        text += "\n\nSkipped (unreadable): " + "; ".join(skipped)
    return text


def headline(outcome: GateOutcome | None) -> str:
    comparison = outcome.comparison if outcome else None
    if comparison is None:
        if outcome is None:
            return f"**{NOT_ASKED}**."
        return f"**{outcome.status}**: " + (outcome.messages[0] if outcome.messages else "no comparison")
    bad = [v for v in comparison.verdicts if v.failing]
    noisy = [f"`{v.id}`" for v in comparison.verdicts if v.verdict == NOISY and not v.failing]
    if noisy:
        noisy_text = f" {len(noisy)} too noisy to decide at the threshold: {', '.join(noisy)}."
    if not bad:
        return "**passed**: nothing regressed or lost against the baseline." + (noisy_text if noisy else "")
    parts = []
    for v in bad:
        worse = [
            f"{m.info.label} {m.change:+.0%}" + (f", {s}" if (s := moved_most(v, m)) else "")
            for m in v.called(REGRESSED)
        ]
        parts.append(f"`{v.id}` ({', '.join(worse) or v.reason})")
    text = f"**FAILED**: {len(bad)} {'benchmark' if len(bad) == 1 else 'benchmarks'} " + "; ".join(parts) + "."
    return text + (noisy_text if noisy else "")


def _context(record: RunRecord) -> str:
    packages = record.environment.get("packages", {})
    versions = ", ".join(f"{k} {packages[k]}" for k in STACK_PACKAGES if packages.get(k))
    w = record.workload
    more = record.schedule.remeasured if record.schedule else None
    noisy = ", ".join(f"`{i}`" for i in more.noisy) if more else ""
    return (
        f"run {record.created} on `{record.hardware}` ({record.device}); checkpoint `{record.checkpoint.get('key')}`; "
        f"{w.get('n_tokens')} semantic tokens per call; {versions}"
        + (
            f"; {more.invocations} invocations added while the gate called {noisy} noisy (`--bark-remeasure-noisy`)"
            if more
            else ""
        )  # fmt: skip
        + (f"; **{record.interrupted}**: the figures are what it measured before" if record.interrupted else "")
    )


def verdict_section(outcome: GateOutcome | None) -> str:
    if outcome is None:
        return f"{NOT_ASKED}."
    if outcome.comparison is None:
        return "\n\n".join(f"- {line}" for line in outcome.messages)
    # a blank line after the notes: a line right under a list item would be read as part of it
    notes = "".join(f"- {line}\n" for line in outcome.messages) + ("\n" if outcome.messages else "")
    return notes + markdown_verdict(outcome.comparison, outcome.baseline_path, measured_only=True)


def _verdict_heading(outcome: GateOutcome | None) -> str:
    """Against a baseline file, or against what `compare-stacks` measured beside the run (its pinned stack)."""
    against = outcome.baseline_path if outcome else None
    return f"## Verdict against the {'stored baseline' if against is None or isinstance(against, Path) else against}"


def markdown(
    record: RunRecord,
    outcome: GateOutcome | None,
    history: History,
    runs: int,
    figures: dict[str, Path],
    skipped: list[str] | None = None,
) -> str:
    comparison = outcome.comparison if outcome else None
    parts = [
        f"# Bark performance report: {record.checkpoint.get('key')} on {record.hardware}",
        headline(outcome),
        _context(record),
        _verdict_heading(outcome),
        verdict_section(outcome),
    ]
    for bs in record.batch_sizes():
        parts += [f"## Batch {bs}: each configuration against `{REFERENCE_CONFIG}` in this run"]
        parts += [blog_table(record, bs, comparison)]
    if sweep := blog.batching_table(record):
        parts += ["## Throughput by batch size: where does a larger batch stop paying?", sweep]
    parts += [_stages_heading(comparison), stages_table(record, comparison)]
    if any(not r.ran for r in record.results):
        parts += ["## Not measured in this run", unavailable_table(record)]
    if drill_down := details.section(outcome):
        parts += [drill_down]
    if runs or skipped:  # no kept runs at all: none were asked for (compare-stacks' report), nothing to say
        parts += ["## History", history_section(history, runs, skipped or [])]
    if figures:
        parts += [FIGURES_HEADING, *(f"![{name}]({path.name})" for name, path in figures.items())]
    return "\n\n".join(parts) + "\n"


def _latency_figure(record: RunRecord, outcome: GateOutcome | None) -> Figure:
    """Latency now against the baseline, drawn as the gate judged it: per host probe, in seconds at the baseline's
    host speed, where it judged so (drawn as measured, a host 33% slower showed bs8-fp16 36% slower beside a row
    that said -2.7%, 2026-12-03)."""
    base, now, scale = outcome.baseline if outcome else None, record, ""
    if outcome is not None and outcome.judged is not None and outcome.per_host_probe:
        (base, now), scale = outcome.judged, "s at the baseline's host speed"
    return plots.spread_figure(now, "latency_s", base, outcome.comparison if outcome else None, scale)


def write(
    folder: Path,
    record: RunRecord,
    outcome: GateOutcome | None = None,
    kept: list[KeptRun] | None = None,
    skipped: list[str] | None = None,
    thresholds: Thresholds | None = None,
    per_host_probe: bool | None = None,
) -> WrittenReport:
    """Write report.md and the figures into `folder` (the run's own folder); `kept` is the history, this run
    included; trends are judged with the gate's thresholds, time per host probe where the gate judges it so
    (`per_host_probe`: as asked, None: as the thresholds say)."""
    th = thresholds or (outcome.comparison.thresholds if outcome and outcome.comparison else Thresholds())
    kept = kept or []
    mem = record.memory_metric()
    history = trends.of_history(kept, record, th, mem, th.per_host_probe(per_host_probe))
    found = history.trends
    baseline = outcome.baseline if outcome else None
    comparison = outcome.comparison if outcome else None
    figures = {}
    if record.batch_sizes():  # none when every benchmark was unavailable: nothing to draw
        figures = {
            "latency": plots.save(_latency_figure(record, outcome), folder / "latency.png"),
            "peak memory": plots.save(plots.spread_figure(record, mem, baseline, comparison), folder / "memory.png"),
            "per-stage time": plots.save(plots.stages_figure(record), folder / "stages.png"),
        }
    if len(record.batch_sizes()) > 1:
        figures["throughput by batch size"] = plots.save(plots.batching_figure(record), folder / "batching.png")
    if len(kept) >= trends.MIN_RUNS:
        for metric, name in (("latency_s", "latency"), (mem, "memory")):
            per_probe = history.per_host_probe and metric == "latency_s"
            figure = plots.trend_figure(found, metric, per_probe)
            figures[f"{name} trend"] = plots.save(figure, folder / f"trend-{name}.png")
    text = markdown(record, outcome, history, len(kept), figures, skipped)
    path = folder / REPORT_FILE
    path.write_text(text, encoding="utf-8")
    return WrittenReport(folder, path, figures, found, text)
