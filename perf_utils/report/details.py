"""The drill-down under the report's verdict: for each benchmark the gate did not call unchanged, what its verdict
was built from (each side's invocations, every metric's change with its interval, the drift counted), so "why is
it noisy?" or "is this regression one odd process?" is answered in the report, not by reading two run.json files.
"""

from __future__ import annotations

import statistics

from tabulate import tabulate

from perf_utils.gate.bootstrap import DOMINANCE, FEW_INVOCATIONS, invocations_dominate
from perf_utils.gate.compare import IMPROVED, NOISY, REGRESSED, BenchmarkVerdict, Comparison, trial_ratios
from perf_utils.gate.decide import GateOutcome
from perf_utils.record.record import BenchmarkResult
from perf_utils.report.table import num, pct

HEADING = "## What each verdict other than unchanged was built from"
SHOWN = (REGRESSED, IMPROVED, NOISY)


def section(outcome: GateOutcome | None) -> str | None:
    """The section, or None when nothing was compared or every benchmark compared was unchanged."""
    comparison = outcome.comparison if outcome else None
    if outcome is None or comparison is None or outcome.judged is None:
        return None
    base, now = (record.by_id() for record in outcome.judged)
    blocks = [
        block(v, base[v.id], now[v.id], comparison, outcome.per_host_probe)
        for v in comparison.verdicts
        if v.verdict in SHOWN and v.id in base and v.id in now
    ]
    return "\n\n".join([HEADING, *blocks]) if blocks else None


def block(
    v: BenchmarkVerdict, base: BenchmarkResult, now: BenchmarkResult, comparison: Comparison, per_probe: bool
) -> str:
    """One benchmark, folded (`<details>`): its two sides' invocations, then every metric compared."""
    unit = "s at the baseline's host speed" if per_probe else "s"
    rows = [_side("baseline", base, comparison.paired), _side("now", now, comparison.paired)]
    if comparison.paired:  # what a paired change is built from: each trial's ratio, grouped by invocation
        ratios = trial_ratios(base, now, "latency_s")
        rows.append(["latency now / base, per trial", _shape(ratios), _medians([ratios]), _dominance(ratios)])
    sides = tabulate(
        rows,
        headers=["", "invocations x rounds", f"latency per invocation ({unit}, median of its rounds)", "their levels"],
        tablefmt="github",
        disable_numparse=True,
    )
    rows = [
        [
            m.info.label,
            m.info.unit,
            _num(m.baseline),
            _num(m.current),
            pct(m.change),
            m.interval,
            (m.verdict if m.info.gated else "not gated") + (f": {m.why}" if m.why else ""),
        ]
        for m in v.metrics
    ]
    change = "paired change (median of the trials' ratios)" if comparison.paired else "change"
    metrics = tabulate(
        rows,
        headers=["metric", "unit", "baseline", "now", change, "98% interval", "verdict"],
        tablefmt="github",
        disable_numparse=True,
    )
    parts = [f"<details><summary><code>{v.id}</code>: {v.verdict}</summary>", sides, metrics, *_notes(v, comparison)]
    return "\n\n".join(parts) + "\n\n</details>"


def _side(name: str, result: BenchmarkResult, paired: bool) -> list[str]:
    """Each invocation's median latency, a baseline's sessions apart: where its level moved between them."""
    groups = result.groups("latency_s")
    return [name, _shape(groups), _medians(result.session_groups("latency_s")), "-" if paired else _dominance(groups)]


def _shape(groups: list[list[float]]) -> str:
    return f"{len(groups)} x {'/'.join(sorted({str(len(g)) for g in groups}))}"


def _medians(sessions: list[list[list[float]]]) -> str:
    """Each invocation's median, by session where there are several."""
    medians = [", ".join(_num(statistics.median(g)) for g in s) for s in sessions]
    if len(medians) > 1:
        medians = [f"session {i}: {m}" for i, m in enumerate(medians, 1)]
    return "; ".join(medians)


def _dominance(groups: list[list[float]]) -> str:
    """Whether this side's invocations differ beyond their rounds, and what the gate did about it
    (`gate.bootstrap`): where they do and are few, its interval was widened as Student's t over them."""
    if not invocations_dominate(groups):
        return "within what their rounds explain"
    widened = f"; interval widened as Student's t over {len(groups)}" if 2 <= len(groups) <= FEW_INVOCATIONS else ""
    return f"differ beyond their rounds (F test at {DOMINANCE:g}){widened}"


def _notes(v: BenchmarkVerdict, comparison: Comparison) -> list[str]:
    if comparison.paired:
        return ["Paired: each change is the median of the per-trial ratios, resampled over invocations, then trials."]
    if v.drift is not None:
        d = v.drift
        return [
            f"Time intervals include the machine's drift between sessions: {d.measured:.1%} SD measured over the "
            f"baseline's {d.sessions} sessions, {d.used:.1%} counted."
        ]
    if comparison.thresholds.drift:
        return [f"Time intervals include pyproject's drift between sessions: {comparison.thresholds.drift:.1%} SD."]
    return []


def _num(value: float) -> str:
    """Four significant digits, a large number whole (a codec's samples per second)."""
    return num(value, ",.0f" if value is not None and abs(value) >= 10_000 else ".4g")
