"""Compare a run against a baseline: a verdict per benchmark and per gated metric.

A change is called only when it is statistically significant over the raw rounds (one-sided Mann-Whitney U)
*and* larger than the metric kind's minimum effect; memory also needs an absolute floor. A configuration
the baseline could run but this run could not is `lost` and fails unless allowed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from scipy.stats import mannwhitneyu

from perf_utils.gate.thresholds import Thresholds
from perf_utils.record.metrics import METRICS, Metric
from perf_utils.record.record import BenchmarkResult, RunRecord

REGRESSED, IMPROVED, UNCHANGED, NEW, LOST = "regressed", "improved", "unchanged", "new", "lost"
UNAVAILABLE, NOT_RUN = "unavailable", "not run"
FAILING = {REGRESSED, LOST}


@dataclass
class MetricChange:
    metric: str
    baseline: float  # median
    current: float  # median
    change: float  # relative change of the median, signed (+ = larger)
    p_value: float
    verdict: str

    @property
    def info(self) -> Metric:
        return METRICS[self.metric]


@dataclass
class BenchmarkVerdict:
    id: str
    config: str
    batch_size: int
    verdict: str
    metrics: list[MetricChange] = field(default_factory=list)
    reason: str | None = None
    allowed: bool = False  # a lost configuration the user allowed
    fidelity: str = "-"  # record.fidelity's OK | FAIL | NOT_CHECKED (the check could not run), or "-" (off)

    @property
    def failing(self) -> bool:
        return self.verdict in FAILING and not self.allowed

    def metric(self, name: str) -> MetricChange | None:
        return next((m for m in self.metrics if m.metric == name), None)


@dataclass
class Comparison:
    verdicts: list[BenchmarkVerdict]
    thresholds: Thresholds

    @property
    def failed(self) -> bool:
        return any(v.failing for v in self.verdicts)

    def by_verdict(self, verdict: str) -> list[BenchmarkVerdict]:
        return [v for v in self.verdicts if v.verdict == verdict]


def _p_value(worse: str, base: list[float], now: list[float]) -> float:
    """P(now is not worse than base); tiny when every round of `now` is worse than every round of `base`."""
    if len(base) < 2 or len(now) < 2:
        return 1.0
    if len(set(base) | set(now)) == 1:
        return 1.0
    alternative = "greater" if worse == "greater" else "less"
    return float(mannwhitneyu(now, base, alternative=alternative).pvalue)


def compare_metric(metric: Metric, base: list[float], now: list[float], th: Thresholds) -> MetricChange | None:
    if not base or not now:
        return None
    b_med, c_med = statistics.median(base), statistics.median(now)
    change = (c_med - b_med) / b_med if b_med else (0.0 if c_med == b_med else math.inf)
    worse_if_larger = metric.better == "lower"
    p_worse = _p_value("greater" if worse_if_larger else "less", base, now)
    p_better = _p_value("less" if worse_if_larger else "greater", base, now)
    verdict = UNCHANGED
    big = th.large(metric.kind, b_med, c_med)
    got_worse = (change > 0) == worse_if_larger and change != 0
    if big and got_worse and p_worse < th.alpha:
        verdict = REGRESSED
    elif big and not got_worse and change != 0 and p_better < th.alpha:
        verdict = IMPROVED
    p = p_worse if (change > 0) == worse_if_larger else p_better
    return MetricChange(metric.name, b_med, c_med, change, p, verdict)


def _ran(result: BenchmarkResult | None) -> bool:
    return result is not None and result.ran


def compare_result(base: BenchmarkResult | None, now: BenchmarkResult | None, th: Thresholds) -> BenchmarkVerdict:
    ref = now or base
    assert ref is not None
    v = BenchmarkVerdict(ref.id, ref.config, ref.batch_size, UNCHANGED)
    if now is None:
        v.verdict, v.reason = NOT_RUN, "not selected in this run"
        return v
    if not _ran(base):
        if _ran(now):
            v.verdict = NEW
        else:
            v.verdict, v.reason = UNAVAILABLE, now.reason
        return v
    if not _ran(now):
        v.verdict, v.reason = LOST, now.reason or now.status
        v.metrics = [
            MetricChange(m, base.summary(m).median, math.nan, math.nan, math.nan, LOST)
            for m in ("latency_s", "host_peak_mb", "accel_peak_mb")
            if base.values(m)
        ]
        return v
    if base.counts and now.counts and base.counts != now.counts:
        v.verdict, v.reason = REGRESSED, f"work changed: baseline produced {base.counts}, now {now.counts}"
        return v
    if now.fidelity is not None:
        v.fidelity = now.fidelity.status
        problems = list(now.fidelity.problems)
        if base.fidelity is not None:
            problems += now.fidelity.worse_than(base.fidelity)
        if problems:
            v.verdict, v.reason = REGRESSED, "fidelity: " + "; ".join(problems)
    for metric in METRICS.values():
        change = compare_metric(metric, base.values(metric.name), now.values(metric.name), th)
        if change is not None:
            v.metrics.append(change)
    gated = [m for m in v.metrics if m.info.gated]
    if v.verdict == REGRESSED:
        return v
    if any(m.verdict == REGRESSED for m in gated):
        v.verdict = REGRESSED
    elif any(m.verdict == IMPROVED for m in gated):
        v.verdict = IMPROVED
    return v


def compare(
    baseline: RunRecord, current: RunRecord, thresholds: Thresholds, allow_lost: set[str] | None = None
) -> Comparison:
    """`allow_lost`: configuration names (or "all") whose loss does not fail the gate."""
    allow_lost = allow_lost or set()
    base, now = baseline.by_id(), current.by_id()
    verdicts = []
    for bid in [*now, *(b for b in base if b not in now)]:
        v = compare_result(base.get(bid), now.get(bid), thresholds)
        if v.verdict == LOST and ("all" in allow_lost or v.config in allow_lost):
            v.allowed = True
        verdicts.append(v)
    return Comparison(verdicts, thresholds)
