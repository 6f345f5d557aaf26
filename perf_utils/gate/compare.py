"""Compare a run against a baseline: a verdict per benchmark and per gated metric.

Each metric's change is the ratio of medians with an interval from a hierarchical bootstrap (invocations, then
rounds: `gate.bootstrap`). A change is called only when the interval excludes "no change" *and* the change is
larger than the metric kind's minimum effect (asv's rule); memory also needs an absolute floor. When neither can
be said, because the interval still reaches a change of the threshold's size, the metric is `noisy`: not a pass
and not a regression, counted, and failing the run only when asked (`--bark-fail-on-noisy`). A configuration the
baseline could run but this run could not is `lost` and fails unless allowed.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field, replace
from statistics import NormalDist

from perf_utils.gate import sessions
from perf_utils.gate.bootstrap import RatioEstimate, paired_ratio, ratio_of_medians
from perf_utils.gate.sessions import SessionDrift
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record.metrics import MEMORY_METRICS, METRICS, STAGE_METRICS, Metric, memory_metric, probe_of
from perf_utils.record.ratios import PEAK_RATIO
from perf_utils.record.record import BenchmarkResult, RunRecord, measured_in

REGRESSED, IMPROVED, UNCHANGED, NEW, LOST = "regressed", "improved", "unchanged", "new", "lost"
UNAVAILABLE, NOT_RUN, NOISY = "unavailable", "not run", "noisy"
NOT_JUDGED = "not judged"  # a metric's: shown, but the two runs' figures differ by how they were measured
FAILING = {REGRESSED, LOST}


# A stage is where latency moved when it made at least this share of latency's move in seconds; a slowdown outside
# the four stages (between them, in `generate` itself) moves none of them, and the largest noise among them is not it.
ONE_STAGE = 0.5
SHOWN_UP_TO = 10.0  # an interval's end beyond +1000% says only "no idea how large": printed as `>+1000%`


@dataclass
class MetricChange:
    metric: str
    baseline: float  # median
    current: float  # median
    change: float  # relative change of the median, signed (+ = larger)
    low: float  # the interval of the relative change (bootstrap; nan when it could not be estimated)
    high: float
    verdict: str
    why: str | None = None  # why a change the interval alone could decide was not (`_beyond_the_probe`)
    # The verdict this change would settle at if invocations were added without end: its interval shrunk to the
    # point, widened only by what they cannot cancel (the machine's drift, `with_drift`; a host past the probe
    # band, `_beyond_the_probe`). None when not known (no spread to judge). `gate.remeasure` skips the `noisy`
    # that would settle `noisy`.
    settles: str | None = None

    @property
    def remeasurable(self) -> bool:
        """Whether more invocations could decide this change."""
        return self.settles != NOISY

    @property
    def interval(self) -> str:
        """Printed to one decimal; an end past `SHOWN_UP_TO` as `>+1000%`: two invocations of a host peak 10 and
        24 MB apart, widened as Student's t with one degree of freedom, read `+5649591832.9%` (2026-12-03)."""
        if math.isnan(self.low):
            return "no interval"
        return "..".join(f">{SHOWN_UP_TO:+.0%}" if x > SHOWN_UP_TO else f"{x:+.1%}" for x in (self.low, self.high))

    @property
    def info(self) -> Metric:
        return METRICS[self.metric]


def made_by(latency: float, stages: dict[str, float]) -> str | None:
    """The stage (its metric) that made at least `ONE_STAGE` of a latency move of `latency` seconds, from each
    stage's move in seconds; None where none did or nothing moved."""
    if not stages or not latency:
        return None
    name, moved = max(stages.items(), key=lambda kv: abs(kv[1]))
    return name if moved / latency >= ONE_STAGE else None


def where_moved(latency: float, stages: dict[str, float], relative: dict[str, float] | None = None) -> str | None:
    """Where a latency move of `latency` seconds happened, from each stage's move in seconds (by its metric): the
    stage that made it (`made_by`, with its `relative` change where given), else whether the four together did
    (spread over them) or not (outside them: in `generate` between them). None without stage times."""
    if not stages or not latency:
        return None
    if (name := made_by(latency, stages)) is not None:
        change = f", {relative[name]:+.1%}" if relative and name in relative else ""
        return f"most in {METRICS[name].label}: {stages[name]:+.3f} s{change}"
    total = sum(stages.values())
    where = "spread over the stages" if total / latency >= ONE_STAGE else "outside the stages"
    return f"{where}: the four moved {total:+.3f} s of {latency:+.3f} s"


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
    noisy_fails: bool = False  # --bark-fail-on-noisy
    drift: SessionDrift | None = None  # the machine's drift measured over the baseline's sessions, when several

    @property
    def failing(self) -> bool:
        return (self.verdict in FAILING and not self.allowed) or (self.verdict == NOISY and self.noisy_fails)

    def metric(self, name: str) -> MetricChange | None:
        return next((m for m in self.metrics if m.metric == name), None)

    def stage_moves(self) -> dict[str, MetricChange]:
        """Each stage's change, by its metric: where a latency change happened (an upgrade that breaks one
        sub-model's attention moves that stage, not the others)."""
        return {name: m for name in STAGE_METRICS if (m := self.metric(name)) is not None}

    def _latency_and_stage_seconds(self) -> tuple[float, dict[str, float]] | None:
        """Latency's move and each stage's, in seconds; None without latency."""
        latency = self.metric("latency_s")
        if latency is None:
            return None
        stages = {name: m.current - m.baseline for name, m in self.stage_moves().items()}
        return latency.current - latency.baseline, stages

    def where(self) -> str | None:
        """Which stage made latency's change (`where_moved`); None without latency or stage times."""
        if (moves := self._latency_and_stage_seconds()) is None:
            return None
        return where_moved(*moves, {n: m.change for n, m in self.stage_moves().items()})

    def moved_most(self) -> MetricChange | None:
        """The stage that made latency's change (`made_by`), if one did."""
        name = made_by(*moves) if (moves := self._latency_and_stage_seconds()) is not None else None
        return self.metric(name) if name else None

    def called(self, *verdicts: str) -> list[MetricChange]:
        """The gated metrics at one of `verdicts`, as a reader is told them: throughput is samples per second of
        latency's own rounds, so it is left out where its verdict is latency's."""
        latency = self.metric("latency_s")
        return [
            m
            for m in self.metrics
            if m.info.gated
            and m.verdict in verdicts
            and not (m.metric == "throughput_sps" and latency is not None and latency.verdict == m.verdict)
        ]


@dataclass
class Comparison:
    verdicts: list[BenchmarkVerdict]
    thresholds: Thresholds
    paired: bool = False  # judged on per-trial ratios of alternating trials (compare-stacks)

    @property
    def failed(self) -> bool:
        return any(v.failing for v in self.verdicts)

    def by_verdict(self, verdict: str) -> list[BenchmarkVerdict]:
        return [v for v in self.verdicts if v.verdict == verdict]


def compare_metric(
    metric: Metric,
    base: list[list[float]],
    now: list[list[float]],
    th: Thresholds,
    pairs: list[list[float]] | None = None,
    mb_per_unit: float | None = None,
) -> MetricChange | None:
    """`base`, `now`: the metric's rounds grouped by invocation. `pairs`, when the two were measured in
    alternating trials: now / base of each trial, grouped by invocation; the change is then their median.
    `mb_per_unit`: what one unit of the metric is in MB, where the memory floor applies to it (`Thresholds.large`)."""
    flat_base, flat_now = [v for g in base for v in g], [v for g in now for v in g]
    if not flat_base or not flat_now:
        return None
    b_med, c_med = statistics.median(flat_base), statistics.median(flat_now)
    change = (c_med - b_med) / b_med if b_med else (0.0 if c_med == b_med else math.inf)
    n_pairs = sum(len(g) for g in pairs or [])
    if n_pairs:
        assert pairs is not None
        est = paired_ratio(pairs, th.alpha)
        change = est.ratio - 1
    big = th.large(metric.kind, b_med, b_med * (1 + change), mb_per_unit)
    if (n_pairs < 2 if n_pairs else len(flat_base) < 2 or len(flat_now) < 2) or not b_med:  # no spread to judge
        if metric.exact and b_med:  # one count a side is the whole story
            out = MetricChange(metric.name, b_med, c_med, change, change, change, NOISY)
            out.verdict = out.settles = _verdict(metric, th, out, mb_per_unit)
            return out
        verdict = NOISY if big else UNCHANGED
        return MetricChange(metric.name, b_med, c_med, change, math.nan, math.nan, verdict)
    drifts = not n_pairs and metric.kind in ("time", "throughput")
    if not n_pairs:
        est = ratio_of_medians(base, now, th.alpha)
        if drifts:
            est = with_drift(est, th)
    out = MetricChange(metric.name, b_med, c_med, change, est.low - 1, est.high - 1, NOISY)
    out.verdict = out.settles = _verdict(metric, th, out, mb_per_unit)
    if out.verdict == NOISY:
        alone = RatioEstimate(est.ratio, est.ratio, est.ratio)  # as if invocations were endless
        alone = with_drift(alone, th) if drifts else alone
        out.settles = _verdict(metric, th, replace(out, low=alone.low - 1, high=alone.high - 1), mb_per_unit)
    return out


def _verdict(metric: Metric, th: Thresholds, c: MetricChange, mb_per_unit: float | None = None) -> str:
    """Called when the interval excludes no change and the change passes the minimum effect; noisy while a change
    of the threshold's size in the worse direction is still inside the interval."""
    worse_if_larger = metric.better == "lower"
    big = th.large(metric.kind, c.baseline, c.baseline * (1 + c.change), mb_per_unit)
    worse_bound = c.high if worse_if_larger else c.low  # how bad it could be
    got_worse = c.change != 0 and (c.change > 0) == worse_if_larger
    if big and got_worse and (c.low > 0 if worse_if_larger else c.high < 0):
        return REGRESSED
    if big and not got_worse and c.change != 0 and (c.high < 0 if worse_if_larger else c.low > 0):
        return IMPROVED
    if (worse_bound > 0) == worse_if_larger and th.large(
        metric.kind, c.baseline, c.baseline * (1 + worse_bound), mb_per_unit
    ):
        return NOISY
    return UNCHANGED


def with_drift(est: RatioEstimate, th: Thresholds) -> RatioEstimate:
    """`est`'s interval with the machine's drift between a baseline and a run (`Thresholds.drift`, an SD of the log
    level) added in quadrature to each side, on the log scale: the bootstrap sees only the spread between the
    run's invocations and between the baseline's, not how far the whole level moved from one session to the other."""
    if not th.drift or math.isnan(est.low) or est.ratio <= 0:
        return est
    z = NormalDist().inv_cdf(1 - th.alpha) * th.drift
    mid = math.log(est.ratio)
    down = math.hypot(max(mid - math.log(est.low), 0.0), z)
    up = math.hypot(max(math.log(est.high) - mid, 0.0), z)
    return RatioEstimate(est.ratio, math.exp(mid - down), math.exp(mid + up))


def _ran(result: BenchmarkResult | None) -> bool:
    return result is not None and result.ran


def trial_ratios(base: BenchmarkResult, now: BenchmarkResult, metric: str) -> list[list[float]]:
    """now / base of the rounds measured in the same trial of the same invocation, grouped by invocation."""
    base_trials = base.by_trial()
    grouped: dict[int, list[float]] = {}
    for key, r in now.by_trial().items():
        b = base_trials.get(key, {}).get(metric)
        if b and metric in r:
            grouped.setdefault(key[0], []).append(r[metric] / b)
    return list(grouped.values())


def host_moved(base: BenchmarkResult, now: BenchmarkResult, th: Thresholds) -> float | None:
    """How far the host's speed moved between the two (the change of the median probes they are judged by,
    `metrics.probe_of`) when beyond `th.host_probe_band`, where dividing by the probe stops tracking Bark; None
    within it or without probes."""
    keys = probe_of(base.rounds), probe_of(now.rounds)
    if keys[0] is None or keys[1] is None:
        return None
    old, new = base.median(keys[0]), now.median(keys[1])
    if not old or not new or not th.beyond_probe_band(new / old - 1):
        return None
    return new / old - 1


def _beyond_the_probe(
    change: MetricChange, metric: Metric, base: BenchmarkResult, now: BenchmarkResult, th: Thresholds, moved: float
) -> MetricChange:
    """Time per probe when the host moved `moved` (beyond the band): a neighbour's load slows Bark's memory-bound
    work more than the probe's, so up to `host_probe_slack` x |moved| of the change may be the host's. A change
    larger than that still counts; one the plain threshold would call but the widened one does not is `noisy`.
    More invocations on such a host decide it only if they would settle it `unchanged` at the plain threshold or
    called at the widened one."""
    wide = compare_metric(
        metric, base.groups(metric.name), now.groups(metric.name), th.widened(th.host_probe_slack * abs(moved))
    )
    assert wide is not None
    if wide.verdict in (REGRESSED, IMPROVED):
        return wide
    if change.verdict == UNCHANGED:
        return change
    change.verdict = NOISY
    if change.settles is not None and wide.settles is not None:
        called = wide.settles in (REGRESSED, IMPROVED)
        change.settles = UNCHANGED if change.settles == UNCHANGED else wide.settles if called else NOISY
    change.why = (
        f"its host probe {moved:+.0%}, past the {th.host_probe_band:.0%} band: up to "
        f"{th.host_probe_slack * abs(moved):.0%} may be the host's"
    )
    return change


def _moved_by_the_process(metric: Metric, base: BenchmarkResult) -> bool:
    """An RSS rise, or the peak ratio to fp32 taken from RSS rises (no allocator peak, no host allocations)."""
    return metric.per_process or (metric.name == PEAK_RATIO and memory_metric(base.metrics()) == "host_peak_mb")


def _why_not_judged(metric: Metric, base: BenchmarkResult, now: BenchmarkResult, unlike: str | None) -> str | None:
    """Why `metric` is shown but not judged between these two, if it is not: a per-process figure measured in unlike
    processes, or peak / fp32 taken from another peak on each side (a baseline from before host allocations were
    counted holds ratios of RSS rises)."""
    if unlike and _moved_by_the_process(metric, base):
        return unlike
    if metric.name == PEAK_RATIO and (old := memory_metric(base.metrics())) != (new := memory_metric(now.metrics())):
        return f"the baseline's is of {old}, this run's of {new}: retake the baseline"
    return None


def compare_result(
    base: BenchmarkResult | None,
    now: BenchmarkResult | None,
    th: Thresholds,
    paired: bool = False,
    per_probe: bool = False,
    unlike_processes: str | None = None,
) -> BenchmarkVerdict:
    """`paired`: the two were measured in alternating trials (`measure.alternate`); each trial's ratio counts.
    `per_probe`: their latency and throughput are in units of the host's speed (`gate.hostspeed.adjusted`), which
    holds only while the host's speed stays near the baseline's (`host_moved`, `_beyond_the_probe`).
    `unlike_processes`: where each side was measured when the two are unlike: their RSS rises are not judged."""
    ref = now or base
    assert ref is not None
    v = BenchmarkVerdict(ref.id, ref.config, ref.batch_size, UNCHANGED)
    if now is None or base is None or not (_ran(base) and _ran(now)):
        return _not_both_measured(v, base, now)
    if base.counts and now.counts and base.counts != now.counts:
        v.verdict, v.reason = REGRESSED, f"work changed: baseline produced {base.counts}, now {now.counts}"
        return v
    _judge_fidelity(v, base, now)
    if paired:
        th = th.for_pairs()
    else:
        th, v.drift = sessions.thresholds_for(base, th)  # measured when the baseline holds several sessions
    moved = host_moved(base, now, th) if per_probe else None
    for metric in METRICS.values():
        pairs = trial_ratios(base, now, metric.name) if paired else None
        scale = _fp32_peak_mb(now) if metric.name == PEAK_RATIO else None
        change = compare_metric(metric, base.groups(metric.name), now.groups(metric.name), th, pairs, scale)
        if change is not None and moved is not None and metric.kind in ("time", "throughput"):
            change = _beyond_the_probe(change, metric, base, now, th, moved)
        if change is not None and (why := _why_not_judged(metric, base, now, unlike_processes)):
            change.verdict, change.settles, change.why = NOT_JUDGED, None, why
        if change is not None:
            v.metrics.append(change)
    if v.verdict != REGRESSED:  # the work or fidelity decided it already
        gated = {m.verdict for m in v.metrics if m.info.gated}
        v.verdict = next((w for w in (REGRESSED, NOISY, IMPROVED) if w in gated), UNCHANGED)
    return v


def _fp32_peak_mb(result: BenchmarkResult) -> float | None:
    """fp32's peak in this run's trials with `result` (each round's peak over its ratio to fp32's): the MB one
    unit of `result`'s peak / fp32 stands for."""
    memory = memory_metric(result.metrics())
    peaks = [r[memory] / r[PEAK_RATIO] for r in result.rounds if r.get(PEAK_RATIO) and memory in r]
    return statistics.median(peaks) if peaks else None


def _judge_fidelity(v: BenchmarkVerdict, base: BenchmarkResult | None, now: BenchmarkResult) -> None:
    """A benchmark that computes something else (or further from fp32 than the baseline did) is regressed,
    however fast it is."""
    if now.fidelity is None:
        return
    v.fidelity = now.fidelity.status
    problems = list(now.fidelity.problems)
    if base is not None and base.fidelity is not None:
        problems += now.fidelity.worse_than(base.fidelity)
    if problems:
        v.verdict, v.reason = REGRESSED, "fidelity: " + "; ".join(problems)


def _not_both_measured(
    v: BenchmarkVerdict, base: BenchmarkResult | None, now: BenchmarkResult | None
) -> BenchmarkVerdict:
    """The verdict of a benchmark one side did not measure: not run now, new, unavailable on both, or lost. The
    side that measured keeps its medians, so the table shows what went missing or what came."""
    if now is None:
        v.verdict, v.reason = NOT_RUN, "not selected in this run"
    elif not _ran(base):
        v.verdict, v.reason = (NEW, None) if _ran(now) else (UNAVAILABLE, now.reason)
        if v.verdict == NEW:
            v.metrics = [MetricChange(m, math.nan, now.summary(m).median, math.nan, math.nan, math.nan, NEW)
                         for m in _SHOWN if now.values(m)]  # fmt: skip
            _judge_fidelity(v, base, now)  # against fp32 in this run: no baseline needed
    else:
        assert base is not None
        v.verdict, v.reason = LOST, now.reason or now.status
        v.metrics = [MetricChange(m, base.summary(m).median, math.nan, math.nan, math.nan, math.nan, LOST)
                     for m in _SHOWN if base.values(m)]  # fmt: skip
    return v


_SHOWN = ("latency_s", *MEMORY_METRICS)  # a one-sided benchmark's figures in the verdict table


def compare(
    baseline: RunRecord,
    current: RunRecord,
    thresholds: Thresholds,
    allow_lost: set[str] | None = None,
    fail_on_noisy: bool = False,
    per_probe: bool = False,
) -> Comparison:
    """`allow_lost`: configuration names (or "all") whose loss does not fail the gate; `fail_on_noisy`: a
    benchmark too noisy to decide fails it; `per_probe`: time is in units of the host's speed (`compare_result`)."""
    allow_lost = allow_lost or set()
    base, now = baseline.by_id(), current.by_id()
    paired = paired_session(baseline, current)
    unlike = unlike_processes(baseline.in_caller, current.in_caller)
    verdicts = []
    for bid in [*now, *(b for b in base if b not in now)]:
        v = compare_result(base.get(bid), now.get(bid), thresholds, paired is not None, per_probe, unlike)
        if v.verdict == NOT_RUN and current.interrupted:
            v.reason = "the run was cut short before it measured this"
        if v.verdict == LOST and ("all" in allow_lost or v.config in allow_lost):
            v.allowed = True
        v.noisy_fails = fail_on_noisy
        verdicts.append(v)
    return Comparison(verdicts, thresholds.for_pairs() if paired else thresholds, paired=paired is not None)


def unlike_processes(baseline_in_caller: bool, current_in_caller: bool) -> str | None:
    """Why RSS rises cannot be judged when one side was measured in the calling process and the other in worker
    processes (`RunRecord.in_caller` of each); None when both were measured alike."""
    if baseline_in_caller == current_in_caller:
        return None
    return f"{measured_in(baseline_in_caller)} in the baseline, {measured_in(current_in_caller)} now"


def paired_session(baseline: RunRecord, current: RunRecord) -> str | None:
    """The session id when the two runs were measured in alternating trials of one session (compare-stacks)."""
    a, b = (r.schedule.session if r.schedule else None for r in (baseline, current))
    return a if a and a == b else None
