"""Trends over the kept runs: the changes a series of nightly runs shows.

One run against the last baseline misses a regression that crept in over several nights, or one a baseline
update swallowed. So the kept runs are read as a series per benchmark and metric, and judged two ways:
- asv's idea: fit piecewise-constant levels (L1 cost, a penalty per step; ruptures' PELT) and call a step, or a
  drift over several steps, when the level moved by more than the metric's minimum effect;
- Conbench's idea: the latest run against the distribution of the recent ones (a z-score), so one bad night is
  called the morning after, before a new level has settled.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

import numpy as np
import ruptures

from perf_utils.gate import hostspeed
from perf_utils.gate.compare import IMPROVED, REGRESSED, UNCHANGED, where_moved
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record.metrics import METRICS, STAGE_METRICS
from perf_utils.record.record import RunRecord
from perf_utils.record.store import KeptRun

MIN_RUNS = 4  # fewer runs than this: no trend is called
MIN_LEVEL = 2  # runs a level must hold before a step is called (the latest run alone is the z-score's job)
LOOKBACK = 20  # how many earlier runs the latest is compared with
Z_LIMIT = 5.0  # Conbench's default z-score threshold
TOO_FEW = "too few runs"


@dataclass(frozen=True)
class Point:
    created: str
    median: float
    low: float
    high: float


def series(runs: list[KeptRun], benchmark: str, metric: str) -> list[Point]:
    """One point per run that measured `benchmark`: the median over its rounds and their range."""
    points = []
    for run in runs:
        result = run.record.by_id().get(benchmark)
        if result is None or not result.ran or not result.values(metric):
            continue
        s = result.summary(metric)
        if s.median > 0:
            points.append(Point(run.record.created, s.median, s.min, s.max))
    return points


def detect_steps(values: list[float], min_level: int = MIN_LEVEL) -> list[int]:
    """Indices where a new level starts. Works on log values, so a step is a ratio; the penalty per step scales
    with the series' own run-to-run noise (robust: the median absolute difference of neighbours)."""
    y = np.log(np.asarray(values, dtype=float))
    n = len(y)
    if n < 2 * min_level:
        return []
    diffs = np.abs(np.diff(y))
    noise = max(float(np.median(diffs)) / 0.954, 0.005)  # median |x1-x2| of N(0, s) is 0.954 s; floor 0.5%
    penalty = 2.0 * noise * math.log(n)  # simulated: no false step in 200 noise-only series of 30 runs at 5% noise,
    # a +20% step 6 runs from the end found 99% of the time
    ends = ruptures.Pelt(model="l1", min_size=min_level, jump=1).fit(y.reshape(-1, 1)).predict(pen=penalty)
    return [int(e) for e in ends[:-1]]


@dataclass
class Trend:
    benchmark: str
    metric: str
    points: list[Point]
    steps: list[int] = field(default_factory=list)  # index of the first run on each new level
    # The steps a reader is shown (`plots.trend_figure`): those past the metric's minimum effect, or every step of
    # a called drift. A figure that dashed each level the fit found showed "a step" under a report that said none.
    marked: list[int] = field(default_factory=list)
    verdict: str = UNCHANGED
    why: str = ""
    z: float | None = None
    # The runs a called trend compares, as indices into `points`: before and after its move (`_where`).
    span: tuple[range, range] | None = None

    def levels(self) -> list[float]:
        """The median of each level, oldest first."""
        bounds = [0, *self.steps, len(self.points)]
        return [statistics.median(p.median for p in self.points[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def _worse(metric: str, change: float) -> bool:
    return (change > 0) == (METRICS[metric].better == "lower")


def _called(metric: str, old: float, new: float, th: Thresholds) -> str | None:
    """REGRESSED / IMPROVED when the move from `old` to `new` is larger than the gate's minimum effect."""
    if not th.large(METRICS[metric].kind, old, new):
        return None
    return REGRESSED if _worse(metric, new / old - 1) else IMPROVED


def analyze(benchmark: str, metric: str, points: list[Point], th: Thresholds) -> Trend:
    trend = Trend(benchmark, metric, points)
    if len(points) < MIN_RUNS:
        trend.verdict, trend.why = TOO_FEW, f"{len(points)} run(s); trends need {MIN_RUNS}"
        return trend
    values = [p.median for p in points]
    trend.steps = detect_steps(values)
    levels = trend.levels()
    trend.marked = [s for s, a, b in zip(trend.steps, levels, levels[1:], strict=False) if _called(metric, a, b, th)]
    earlier = values[-1 - LOOKBACK : -1]
    mean, stdev = statistics.fmean(earlier), statistics.stdev(earlier)
    trend.z = (values[-1] - mean) / stdev if stdev > 0 else (0.0 if values[-1] == mean else math.inf)
    latest = _called(metric, mean, values[-1], th)
    if latest and abs(trend.z) >= Z_LIMIT:
        trend.verdict, trend.span = (
            latest,
            (range(len(values) - 1 - len(earlier), len(values) - 1), range(len(values) - 1, len(values))),
        )
        trend.why = (
            f"latest run {values[-1] / mean - 1:+.1%} against the mean of the {len(earlier)} before (z={trend.z:.1f})"
        )
        return trend
    if len(levels) >= 2:
        step = _called(metric, levels[-2], levels[-1], th)
        since = points[trend.steps[-1]].created[:10]
        if step:
            trend.verdict = step
            trend.span = (range(([0, *trend.steps])[-2], trend.steps[-1]), range(trend.steps[-1], len(values)))
            trend.why = (
                f"stepped {levels[-1] / levels[-2] - 1:+.1%} on {since}, held for {len(points) - trend.steps[-1]} runs"
            )
            return trend
        drift = _called(metric, levels[0], levels[-1], th)
        if drift:
            trend.verdict, trend.marked = drift, list(trend.steps)
            trend.span = (range(0, trend.steps[0]), range(trend.steps[-1], len(values)))
            trend.why = (
                f"drifted {levels[-1] / levels[0] - 1:+.1%} over {len(levels) - 1} steps since {points[0].created[:10]}"
            )
    return trend


@dataclass
class History:
    """The trends of every benchmark of the latest run: latency, its peak memory, throughput."""

    trends: list[Trend]
    per_host_probe: bool  # latency and throughput read in units of the host's speed (at the latest run's)
    without_probe: int = 0  # kept runs left out of the time series: they carry no probe (an older suite)


def of_history(runs: list[KeptRun], latest: RunRecord, th: Thresholds, memory: str, per_host_probe: bool) -> History:
    """The History's trends, time read as the gate reads it. Per host probe (the shared CPU), a host that is slower
    for every program for a few nights is not a step of Bark's: replayed on 12 kept runs of the default CPU tier
    (unchanged code, 2026-12-02/03), as measured 48 latency trends were called in 7 of 9 nights' reports, per probe 8
    in 4 (docs/cpu-2026-12-03-history-per-probe). Each kept run is put at the latest run's host speed, so time still
    reads in seconds; memory as measured."""
    metrics = ["latency_s", memory, "throughput_sps"]
    speed = hostspeed.probe_median(latest) if per_host_probe else None
    if speed is None:
        return History(trends(runs, latest, th, metrics), per_host_probe=False)
    time = [m for m in metrics if m != memory]
    timed = [KeptRun(k.path, hostspeed.at_speed(k.record, speed)) for k in runs if hostspeed.probe_median(k.record)]
    found = trends(timed, hostspeed.at_speed(latest, speed), th, time) + trends(runs, latest, th, [memory])
    order = [r.id for r in latest.results]
    found.sort(key=lambda t: (order.index(t.benchmark), metrics.index(t.metric)))
    return History(found, per_host_probe=True, without_probe=len(runs) - len(timed))


def trends(runs: list[KeptRun], latest: RunRecord, th: Thresholds, metrics: list[str] | None = None) -> list[Trend]:
    """A trend per benchmark of `latest` and gated metric it measured (or `metrics`)."""
    out = []
    for result in latest.results:
        if not result.ran:
            continue
        names = metrics or [m for m in result.metrics() if METRICS.get(m) and METRICS[m].gated]
        for metric in names:
            if metric in result.metrics():
                trend = analyze(result.id, metric, series(runs, result.id, metric), th)
                trend.why += _where(trend, runs)
                out.append(trend)
    return out


def _where(trend: Trend, runs: list[KeptRun]) -> str:
    """For a called latency trend: which of Bark's stages made most of its move over the same runs (as the gate
    says of one run, `compare.where_moved`), so "stepped +20% on 11-28" also says where; "" where the runs carry no
    stage times."""
    if trend.metric != "latency_s" or trend.span is None:
        return ""
    before, after = trend.span
    dates = [p.created for p in trend.points]

    def move(values: dict[str, float]) -> float | None:
        if not all(dates[i] in values for i in (*before, *after)):
            return None
        return statistics.median(values[dates[i]] for i in after) - statistics.median(values[dates[i]] for i in before)

    moved = move({p.created: p.median for p in trend.points})
    stages = {m: move({p.created: p.median for p in series(runs, trend.benchmark, m)}) for m in STAGE_METRICS}
    where = where_moved(moved or 0.0, {m: s for m, s in stages.items() if s is not None})
    return f"; {where}" if where else ""
