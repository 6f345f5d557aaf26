"""Latency in units of the host's speed: each round's latency divided by the host probes (`measure.probe`) of its
invocation, so a machine that is slower today for every program does not read as Bark being slower.

Judged like latency (same thresholds and bootstrap); used where both runs carry the probe. torch-free.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from perf_utils.gate.compare import UNCHANGED, BenchmarkVerdict
from perf_utils.record.metrics import METRICS, probe_of
from perf_utils.record.record import BenchmarkResult, RunRecord

# Read in units of the host's speed: every time and rate the host moves (`Metric.host_power`), so a stage's change,
# or the tokens per second of one, reads as latency's does.
MOVED = {name: m.host_power for name, m in METRICS.items() if m.host_power}


def adjusted(result: BenchmarkResult, speed: float = 1.0) -> BenchmarkResult | None:
    """`result` with every time (latency, each stage's) and rate (throughput, tokens per second) per round divided /
    multiplied by the host's slowness in that round's invocation (`Metric.host_power`): the median of the
    invocation's probes (`metrics.probe_of`; times `speed`, a probe time: at `speed`, latency stays in seconds).
    Per invocation, not per round: the drift lives between invocations (minutes), and dividing by each round's own
    probe adds that probe's noise to the round (replayed on 30 processes: 80% of unchanged runs noisy at 15% per
    round, 61% per invocation, 68% as measured; README). Every other metric as it was; None when a round has no
    probe (a run of an older suite)."""
    key = probe_of(result.rounds)
    if key is None:
        return None
    labels = result.invocations or [0] * len(result.rounds)
    probes: dict[int, list[float]] = {}
    for inv, r in zip(labels, result.rounds, strict=True):
        probes.setdefault(inv, []).append(r[key])
    host = {inv: statistics.median(values) / speed for inv, values in probes.items()}
    rounds = []
    for inv, r in zip(labels, result.rounds, strict=True):
        out = dict(r)  # memory and the ratios to fp32 as they were
        for name, power in MOVED.items():
            if name in r:
                out[name] = r[name] / host[inv] ** power
        rounds.append(out)
    return replace(result, rounds=rounds)


def probe_median(record: RunRecord) -> float | None:
    """The run's median probe time over every round, each round's probe being the one it is judged by
    (`metrics.probe_of`: its invocation's median over every benchmark), so the run's probe change is the one each
    benchmark's verdict reads (the raw rounds' median said +21% above rows that said +33%, 2026-12-03); None when
    it has none."""
    values = [v for r in record.results if (key := probe_of(r.rounds)) for v in r.values(key)]
    return statistics.median(values) if values else None


def probe_change(baseline: RunRecord, current: RunRecord) -> float | None:
    """How much slower (+) or faster (-) the host ran the probe in `current` than in `baseline` (ratio of the
    medians over every round of the run, minus 1); None when either has no probe."""
    old, new = probe_median(baseline), probe_median(current)
    return None if old is None or new is None else new / old - 1


def at_baseline_speed(baseline: RunRecord, current: RunRecord) -> tuple[RunRecord, RunRecord] | str:
    """Both runs with latency and throughput in units of the host's speed, scaled to the baseline's median
    probe (so they still read in seconds: what this run would have taken on the host as fast as the baseline's);
    or why they cannot be (a run without the probe)."""
    speed = probe_median(baseline)
    if speed is None or probe_median(current) is None:
        which = "the baseline" if speed is None else "this run"
        return f"{which} has no host probe (measured by an older suite)"
    return at_speed(baseline, speed), at_speed(current, speed)


def at_speed(record: RunRecord, speed: float) -> RunRecord:
    """A copy of `record` with latency and throughput in units of the host's speed, scaled to `speed` (a probe time,
    so they read in seconds at a host that runs the probe in `speed`); a result without the probe as it was."""
    copy = record.copy()
    copy.results = [(adjusted(r, speed) or r) if r.ran else r for r in record.results]
    return copy


NOTE_AT = 0.03  # a probe change smaller than this is within what the medians of quiet processes spread (~2%)


def notes(baseline: RunRecord, current: RunRecord, verdicts: list[BenchmarkVerdict]) -> list[str]:
    """When the host ran the probe markedly slower or faster than at the baseline: say so, with each called or
    noisy benchmark's latency change beside its change in units of the host's speed. The verdicts stand; this
    tells the reader whether the machine moved with them."""
    change = probe_change(baseline, current)
    if change is None or abs(change) < NOTE_AT:
        return []
    base, now = baseline.by_id(), current.by_id()
    shown = []
    for v in verdicts:
        latency = v.metric("latency_s")
        if latency is None or latency.verdict == UNCHANGED or v.id not in base or v.id not in now:
            continue
        old, new = adjusted(base[v.id]), adjusted(now[v.id])
        old_s, new_s = (r.median("latency_s") if r is not None else None for r in (old, new))
        if not old_s or new_s is None:
            continue
        ratio = new_s / old_s - 1
        shown.append(f"{v.id} {latency.change:+.1%} ({ratio:+.1%} / probe)")
    slower = "slower" if change > 0 else "faster"
    line = (
        f"note: this machine ran the host probe (fixed CPU work after each round) {change:+.1%} {slower} than at "
        "the baseline; a latency change of about that size may be the machine's, not Bark's"
    )
    return [line + (": " + ", ".join(shown) if shown else "")]
