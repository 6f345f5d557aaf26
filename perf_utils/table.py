"""The verdict table: one row per benchmark, readable at a glance (plain text in a terminal, Markdown in CI)."""

from __future__ import annotations

import math

from tabulate import tabulate

from perf_utils.compare import LOST, REGRESSED, UNAVAILABLE, BenchmarkVerdict, Comparison

_MARK = {"regressed": "REGRESSED", "lost": "LOST", "improved": "improved", "new": "new"}


def num(value: float | None, fmt: str) -> str:
    return "-" if value is None or math.isnan(value) else format(value, fmt)


def _pct(change: float) -> str:
    return "-" if change is None or math.isnan(change) else f"{change:+.1%}"


# The memory figure a reader expects, first found first: the accelerator allocator's peak on a GPU, else the host's.
MEMORY_METRICS = ("accel_peak_mb", "host_peak_mb")


def memory_metric(v: BenchmarkVerdict) -> str | None:
    for name in MEMORY_METRICS:
        if v.metric(name) is not None:
            return name
    return None


def _note(v: BenchmarkVerdict) -> str:
    if v.reason:
        return v.reason + (" (allowed)" if v.allowed else "")
    bad = [m for m in v.metrics if m.info.gated and m.verdict in (REGRESSED, "improved")]
    return ", ".join(f"{m.info.label} {_pct(m.change)} (p={m.p_value:.3f})" for m in bad)


def verdict_rows(comparison: Comparison, measured_only: bool = False) -> list[list[str]]:
    """`measured_only` leaves out benchmarks that could run neither now nor in the baseline (`not_measured_line`)."""
    rows = []
    for v in comparison.verdicts:
        if measured_only and v.verdict == UNAVAILABLE:
            continue
        lat = v.metric("latency_s")
        mem_name = memory_metric(v)
        mem = v.metric(mem_name) if mem_name else None
        thr = v.metric("throughput_sps")
        verdict = _MARK.get(v.verdict, v.verdict)
        if v.verdict == LOST and v.allowed:
            verdict = "lost (allowed)"
        rows.append(
            [
                v.id,
                num(lat.baseline, ".3f") if lat else "-",
                num(lat.current, ".3f") if lat else "-",
                _pct(lat.change) if lat else "-",
                num(mem.baseline, ".1f") if mem else "-",
                num(mem.current, ".1f") if mem else "-",
                _pct(mem.change) if mem else "-",
                _pct(thr.change) if thr else "-",
                v.fidelity,
                verdict,
                _note(v),
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
    "throughput",
    "fidelity",
    "verdict",
    "why",
]


def verdict_table(comparison: Comparison, tablefmt: str = "simple", measured_only: bool = False) -> str:
    rows = verdict_rows(comparison, measured_only)
    return tabulate(rows, headers=HEADERS, tablefmt=tablefmt, disable_numparse=True)


def not_measured_line(comparison: Comparison) -> str:
    """One line for what could run neither now nor in the baseline, instead of a row each."""
    names = list(dict.fromkeys(v.config for v in comparison.verdicts if v.verdict == UNAVAILABLE))
    if not names:
        return ""
    return f"unavailable now and in the baseline: {', '.join(names)} (why: python -m perf_utils configs)"


def summary_line(comparison: Comparison) -> str:
    counts: dict[str, int] = {}
    for v in comparison.verdicts:
        counts[v.verdict] = counts.get(v.verdict, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in counts.items())
    th = comparison.thresholds
    rule = (
        f"a change is called when p<{th.alpha} (Mann-Whitney U over rounds) and larger than "
        f"{th.time:.0%} time, {th.memory:.0%} (and {th.memory_floor_mb:g} MB) memory"
    )
    status = "FAILED" if comparison.failed else "passed"
    return f"bark gate {status}: {parts}; {rule}"


def markdown_verdict(comparison: Comparison, baseline: object, measured_only: bool = False) -> str:
    table = verdict_table(comparison, "github", measured_only)
    rest = not_measured_line(comparison) if measured_only else ""
    return f"{summary_line(comparison)}\n\nbaseline: `{baseline}`\n\n{table}" + (f"\n\n{rest}" if rest else "")


def markdown_section(comparison: Comparison, baseline: object) -> str:
    """The verdict as Markdown, for GitHub Actions' job summary."""
    return f"### Bark performance gate\n\n{markdown_verdict(comparison, baseline)}\n\n"
