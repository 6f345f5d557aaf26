"""Latency in units of the host's speed: each round's latency divided by the host probe timed right after it
(`measure.probe`), so a machine that is slower today for every program does not read as Bark being slower.

Judged like latency (same thresholds and bootstrap); used where both runs carry the probe. torch-free.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

from perf_utils.gate.compare import UNCHANGED, BenchmarkVerdict
from perf_utils.record.metrics import HOST_PROBE
from perf_utils.record.record import BenchmarkResult, RunRecord

ADJUSTED = ("latency_s", "throughput_sps")


def adjusted(result: BenchmarkResult) -> BenchmarkResult | None:
    """`result` with latency and throughput per round divided / multiplied by that round's probe; None when a
    round has no probe (a run of an older suite)."""
    if not result.rounds or any(not r.get(HOST_PROBE) for r in result.rounds):
        return None
    rounds = []
    for r in result.rounds:
        probe = r[HOST_PROBE]
        out = {k: v for k, v in r.items() if k in ADJUSTED or k == HOST_PROBE}
        if "latency_s" in r:
            out["latency_s"] = r["latency_s"] / probe
        if "throughput_sps" in r:
            out["throughput_sps"] = r["throughput_sps"] * probe
        rounds.append(out)
    return replace(result, rounds=rounds)


def probe_change(baseline: RunRecord, current: RunRecord) -> float | None:
    """How much slower (+) or faster (-) the host ran the probe in `current` than in `baseline` (ratio of the
    medians over every round of the run, minus 1); None when either has no probe."""
    medians = []
    for record in (baseline, current):
        values = [v for r in record.results for v in r.values(HOST_PROBE)]
        if not values:
            return None
        medians.append(statistics.median(values))
    return medians[1] / medians[0] - 1


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
        if old is None or new is None:
            continue
        ratio = statistics.median(new.values("latency_s")) / statistics.median(old.values("latency_s")) - 1
        shown.append(f"{v.id} {latency.change:+.1%} ({ratio:+.1%} / probe)")
    slower = "slower" if change > 0 else "faster"
    line = (
        f"note: this machine ran the host probe (fixed CPU work after each round) {change:+.1%} {slower} than at "
        "the baseline; a latency change of about that size may be the machine's, not Bark's"
    )
    return [line + (": " + ", ".join(shown) if shown else "")]
