"""Latency in units of the host's speed: each round's latency divided by the host probe timed right after it
(`measure.probe`), so a machine that is slower today for every program does not read as Bark being slower.

Judged like latency (same thresholds and bootstrap); used where both runs carry the probe. torch-free.
"""

from __future__ import annotations

import statistics
from dataclasses import replace

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
