"""Tables a person reads at a glance (plain text in a terminal, Markdown in CI): the verdict table, the run table
of `python -m perf_utils run`, and the configuration table."""

from __future__ import annotations

import math

from tabulate import tabulate

from perf_utils.gate.compare import (
    IMPROVED,
    LOST,
    NEW,
    NOISY,
    NOT_JUDGED,
    NOT_RUN,
    REGRESSED,
    UNAVAILABLE,
    BenchmarkVerdict,
    Comparison,
    MetricChange,
)
from perf_utils.record.metrics import memory_metric
from perf_utils.record.record import RunRecord

# How each verdict is written: plain for a terminal, with a coloured mark in Markdown.
VERDICT_TEXT = {REGRESSED: "REGRESSED", LOST: "LOST", IMPROVED: "improved", NEW: "new", NOISY: "NOISY"}
VERDICT_MARKDOWN = {
    REGRESSED: "🔴 REGRESSED",
    LOST: "🔴 LOST",
    IMPROVED: "🟢 improved",
    NEW: "🆕 new",
    NOISY: "🟡 noisy",
}


def num(value: float | None, fmt: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, fmt)


def pct(change: float | None) -> str:
    return num(change, "+.1%")


def _note(v: BenchmarkVerdict, peak: MetricChange | None, joiner: str = ", ") -> str:
    """The metrics behind the row's verdict (`BenchmarkVerdict.called`), each with its change and interval, joined
    by `joiner`; and the row's `peak` column where it is not judged."""
    if v.reason:
        return v.reason + (" (allowed)" if v.allowed else "")
    shown = v.called(REGRESSED, IMPROVED, NOISY)
    if peak is not None and peak.verdict == NOT_JUDGED:  # its change is in the row: say why it does not count
        shown.append(peak)
    return joiner.join(f"{m.info.label} {pct(m.change)} ({_why(m, v.verdict)}{_where(v, m)})" for m in shown)


def _where(v: BenchmarkVerdict, m: MetricChange) -> str:
    """After a called latency change: where it happened (`moved_most`), where to look first."""
    return f"; {where}" if (where := moved_most(v, m)) else ""


def moved_most(v: BenchmarkVerdict, m: MetricChange) -> str | None:
    """For a called latency change `m` of `v`: which of Bark's stages made it (`BenchmarkVerdict.where`)."""
    return v.where() if m.metric == "latency_s" and m.verdict in (REGRESSED, IMPROVED) else None


def _why(m: MetricChange, row: str) -> str:
    """The interval; the metric's own verdict too where it is not the row's (a noisy peak in a regressed row)."""
    if m.why:
        return m.why if m.verdict == row else f"{m.verdict}: {m.why}"
    if m.verdict == NOISY and math.isnan(m.low):
        return "too few rounds to decide"
    return m.interval if m.verdict == row else f"{m.interval}, {m.verdict}"


def verdict_rows(comparison: Comparison, measured_only: bool = False, joiner: str = ", ") -> list[list[str]]:
    """`measured_only` leaves out benchmarks that could run neither now nor in the baseline, and those this run did
    not measure (`not_measured_lines` says them in a line per reason). No throughput column: at a fixed batch size
    it is latency's inverse; *why* names it where its verdict differs, each metric after `joiner`."""
    rows = []
    for v in comparison.verdicts:
        if measured_only and v.verdict in FOLDED:
            continue
        lat = v.metric("latency_s")
        mem = v.metric(memory_metric({m.metric for m in v.metrics}))
        verdict = VERDICT_TEXT.get(v.verdict, v.verdict)
        if v.verdict == LOST and v.allowed:
            verdict = "lost (allowed)"
        rows.append(
            [
                v.id,
                num(lat.baseline, ".3f") if lat else "-",
                num(lat.current, ".3f") if lat else "-",
                pct(lat.change) if lat else "-",
                num(mem.baseline, ".1f") if mem else "-",
                num(mem.current, ".1f") if mem else "-",
                pct(mem.change) if mem else "-",
                v.fidelity,
                verdict,
                _note(v, mem, joiner),
            ]
        )
    return rows


HEADERS = [
    "benchmark",
    "latency s (base)",
    "latency s (now)",
    "change",
    "peak MB (base)",
    "peak MB (now)",
    "change",
    "fidelity",
    "verdict",
    "why",
]


def verdict_table(comparison: Comparison, tablefmt: str = "simple", measured_only: bool = False) -> str:
    """Paired (compare-stacks), a change is the median of the per-trial ratios, not the ratio of the two medians
    beside it: its header says so (and `paired_lines` where the two disagree). On a terminal (`simple`) each
    metric of *why* and each header's "(base)" / "(now)" take a line of their own: one line per row made a row of
    four metrics 330 characters wide (2026-12-03, a legacy-stack session), wrapped by every terminal; Markdown
    cells stay on one line."""
    lines = tablefmt != "github"
    rows = verdict_rows(comparison, measured_only, "\n" if lines else ", ")
    headers = [("paired change" if h == "change" and comparison.paired else h) for h in HEADERS]
    if lines:
        headers = [h.replace(" (", "\n(").replace("paired ", "paired\n") for h in headers]
    return tabulate(rows, headers=headers, tablefmt=tablefmt, disable_numparse=True)


# Verdicts said in a line per reason under the table instead of a row each (`not_measured_lines`): they hold no
# measurement, and a run of two configurations would otherwise print twenty rows of the others.
FOLDED = (UNAVAILABLE, NOT_RUN)


def not_measured_lines(comparison: Comparison) -> list[str]:
    """What could run neither now nor in the baseline, and what this run did not measure (not selected, or not
    reached before an interrupt): a line per reason, naming a configuration whole where none of its batch sizes
    ran, else its benchmarks."""
    lines = []
    unavailable = [v for v in comparison.verdicts if v.verdict == UNAVAILABLE]
    if unavailable:
        names = ", ".join(dict.fromkeys(v.config for v in unavailable))
        lines.append(f"unavailable now and in the baseline: {names} (why: python -m perf_utils configs)")
    by_reason: dict[str, list[BenchmarkVerdict]] = {}
    for v in comparison.verdicts:
        if v.verdict == NOT_RUN:
            by_reason.setdefault(v.reason or "", []).append(v)
    for reason, verdicts in by_reason.items():
        lines.append(f"not run, {reason}: {_benchmarks(verdicts, comparison.verdicts)}")
    return lines


def paired_lines(comparison: Comparison) -> list[str]:
    """Paired, the change is the median of the trials' own ratios (now / base in one trial: what drifted between
    trials cancels), not the ratio of the two medians beside it. Where the two point opposite ways in the table
    (`28.0 -> 28.7 MB, -2.4%`: seen 2026-12-03 between two transformers releases) the reader is told which cells
    and why, instead of taking one of them for a bug."""
    if not comparison.paired:
        return []
    cells = []
    for v in comparison.verdicts:
        if v.verdict in FOLDED:
            continue
        for m in (v.metric("latency_s"), v.metric(memory_metric({x.metric for x in v.metrics}))):
            if m is not None and _opposite(m):
                cells.append(f"{v.id} {m.info.label}")
    if not cells:
        return []
    named = ", ".join(cells[:SAID_CELLS]) + (f" and {len(cells) - SAID_CELLS} more" if len(cells) > SAID_CELLS else "")
    return [
        "paired change: the median of the trials' own ratios, not the ratio of the medians beside it; they point "
        f"opposite ways for {named} (the trials scatter more than the change)"
    ]


SAID_CELLS = 4  # `paired_lines` names this many cells, then counts the rest: a line, not a second table


def _opposite(m: MetricChange) -> bool:
    """Whether the medians' ratio and the paired change, each as printed (to 0.1%), have opposite signs."""
    if not m.baseline or any(math.isnan(x) for x in (m.baseline, m.current, m.change)):
        return False
    of_medians = round(m.current / m.baseline - 1, 3)
    return of_medians * round(m.change, 3) < 0


def _benchmarks(some: list[BenchmarkVerdict], every: list[BenchmarkVerdict]) -> str:
    """`some` by configuration name where they hold all of its benchmarks in `every`, else by benchmark id."""
    ids = {v.id for v in some}
    whole = {v.config for v in some if all(w.id in ids for w in every if w.config == v.config)}
    return ", ".join(dict.fromkeys(v.config if v.config in whole else v.id for v in some))


def summary_line(comparison: Comparison) -> str:
    """The verdict in one short line (`rule_line` says by what rule)."""
    counts: dict[str, int] = {}
    for v in comparison.verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in counts.items())
    return f"bark gate {'FAILED' if comparison.failed else 'passed'}: {parts}"


def rule_line(comparison: Comparison) -> str:
    """How the verdicts were called: the interval, the thresholds and the drift the time intervals include."""
    th = comparison.thresholds
    over = "paired per-trial ratios of alternating trials" if comparison.paired else "rounds"
    rule = (
        f"a change is called when its {1 - 2 * th.alpha:.0%} interval (bootstrap over invocations, then {over}; "
        "widened as Student's t where a few invocations differ beyond their rounds) "
        f"excludes none and it is larger than {th.time:.0%} time, {th.memory:.0%} (and {th.memory_floor_mb:g} MB) "
        f"memory, {th.ratio:.0%} (and {th.memory_floor_mb:g} MB for a peak) ratio to fp32; noisy when the interval "
        "still reaches that size"
    )
    measured = [v.drift for v in comparison.verdicts if v.drift is not None]
    if measured and not comparison.paired:
        used = sorted(d.used for d in measured)
        span = f"{used[0]:.1%}" if f"{used[0]:.1%}" == f"{used[-1]:.1%}" else f"{used[0]:.1%}-{used[-1]:.1%}"
        rule += (
            f"; time intervals include the machine's drift between sessions ({span} SD, measured over the "
            f"baseline's {max(d.sessions for d in measured)} sessions, pyproject's {th.drift:.0%} counted as "
            f"{th.drift_prior_sessions:g})"
        )
    elif th.drift and not comparison.paired:
        rule += f"; time intervals include the machine's drift between the two runs ({th.drift:.0%} SD, pyproject)"
    return rule[0].upper() + rule[1:]


def markdown_verdict(comparison: Comparison, baseline: object, measured_only: bool = False) -> str:
    table = verdict_table(comparison, "github", measured_only)
    rest = "\n\n".join((not_measured_lines(comparison) if measured_only else []) + paired_lines(comparison))
    head = f"**{summary_line(comparison)}**. {rule_line(comparison)}."
    return f"{head}\n\nbaseline: `{baseline}`\n\n{table}" + (f"\n\n{rest}" if rest else "")


def markdown_section(comparison: Comparison, baseline: object) -> str:
    """The verdict as Markdown, for GitHub Actions' job summary."""
    return f"### Bark performance gate\n\n{markdown_verdict(comparison, baseline)}\n\n"


RUN_COLUMNS = (  # (metric, header, format)
    ("latency_s", "latency s", ".3f"),
    ("throughput_sps", "samples/s", ".2f"),
    ("rtf", "RTF", ".3f"),
    ("host_alloc_peak_mb", "host alloc MB", ".1f"),
    ("host_peak_mb", "RSS rise MB", ".1f"),
    ("accel_peak_mb", "accel peak MB", ".1f"),
    ("nvml_process_peak_mb", "NVML proc MB", ".1f"),
    ("energy_j", "energy J", ".2f"),
    ("stage_semantic_s", "semantic s", ".3f"),
    ("stage_coarse_s", "coarse s", ".3f"),
    ("stage_fine_s", "fine s", ".3f"),
    ("stage_codec_s", "codec s", ".3f"),
)


def run_table(record: RunRecord) -> str:
    """Medians over the measured rounds; columns with no data anywhere (e.g. GPU memory on CPU) are dropped."""
    ok = record.measured()
    columns = [c for c in RUN_COLUMNS if any(r.values(c[0]) for r in ok)]
    rows = []
    for r in record.results:
        if not r.ran:
            rows.append([r.id, r.status + ": " + (r.reason or "")] + [""] * (len(columns) + 5))
            continue
        counts = r.counts or {}
        overhead = r.summary("overhead_s").median / r.summary("latency_s").median
        fidelity = r.fidelity.status if r.fidelity else "-"
        cells = [num(r.median(m), fmt) for m, _, fmt in columns]
        sem, audio = counts.get("semantic_tokens"), counts.get("audio_samples")
        warmup = "-" if r.warmup is None else r.warmup
        rows.append([r.id, warmup, len(r.rounds), *cells, sem, audio, f"{overhead:.2%}", fidelity])
    headers = ["benchmark", "warm-up", "rounds", *(h for _, h, _ in columns), "sem tokens", "audio samples", "overhead"]
    return tabulate(rows, headers=[*headers, "fidelity"], tablefmt="github", disable_numparse=True)


def configs_table(rows: list[tuple[str, str, list[str]]], device_type: str) -> str:
    """(configuration, what it changes, every reason it cannot run here). Each reason is said once, numbered under
    the table, and the rows name their numbers: a reason shared by five configurations was five 400-character
    cells, wider than any terminal."""
    notes: dict[str, int] = {}
    body = []
    for name, summary, reasons in rows:
        numbers = [notes.setdefault(why, len(notes) + 1) for why in reasons]
        body.append((name, summary, "unavailable: " + ", ".join(f"[{n}]" for n in numbers) if numbers else "available"))
    table = tabulate(body, headers=("configuration", "what it changes", f"on {device_type}"), tablefmt="github")
    return "\n".join([table, "", *(f"[{n}] {why}" for why, n in notes.items())]) if notes else table
