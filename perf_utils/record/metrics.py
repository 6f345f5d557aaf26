"""The metrics the suite records, as data: unit, which direction is better, and whether the gate judges it.

Measurement, comparison, tables and reports all read this one table, so adding a metric is one entry. The
names of Bark's four stages and the megabyte are defined here once too.
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1024 * 1024
# Bark's four stages, in the order `BarkModel.generate` runs them; each has a `stage_<name>_s` metric.
STAGES = ("semantic", "coarse", "fine", "codec")


def stage_metric(stage: str) -> str:
    """The metric of one stage's time per call."""
    return f"stage_{stage}_s"


STAGE_METRICS = tuple(stage_metric(s) for s in STAGES)  # their times, in the order of STAGES
# The bytes a call allocated on the host at its peak (memray, in an untimed call of its own per case and invocation
# after its trials: `measure.trackers.allocations`), carried by the invocation's first round.
HOST_ALLOC_PEAK = "host_alloc_peak_mb"
# The memory figure a reader expects and the gate judges, first found first: the accelerator allocator's peak on a
# GPU, else the host's allocations; the host's RSS rise only in a record without either (an older suite, no memray).
MEMORY_METRICS = ("accel_peak_mb", HOST_ALLOC_PEAK, "host_peak_mb")
# Fixed CPU work timed after each round (`measure.probe`): the host's speed then, not Bark's.
HOST_PROBE = "host_probe_s"
# The median of HOST_PROBE over every round of every benchmark interleaved in the same invocation: the host's speed
# for that process, which all its benchmarks share. The gate divides by this (`gate.hostspeed`), not by a benchmark's
# own 2 probes per invocation: over 75 benchmarks of 8 default-tier runs and both baselines here, the spread of their
# invocations' latency / probe fell from 10.6% to 8.8%
# (docs/gate-quality.md, "The invocation's probe, not the benchmark's own").
INVOCATION_PROBE = "invocation_probe_s"


def probe_of(rounds: list[dict[str, float]]) -> str | None:
    """The probe these rounds are judged by: the invocation's median over every benchmark interleaved with them
    (`INVOCATION_PROBE`) where every round carries it, else the rounds' own probes (a gate-quality file of an
    older suite, or sessions whose invocations cannot be matched across benchmarks); None without probes."""
    for key in (INVOCATION_PROBE, HOST_PROBE):
        if rounds and all(r.get(key) for r in rounds):
            return key
    return None


def memory_metric(measured: set[str] | list[str]) -> str:
    """The peak to show for a run (or a verdict) that measured these metrics."""
    return next((m for m in MEMORY_METRICS if m in measured), MEMORY_METRICS[-1])


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    unit: str
    better: str  # "lower" | "higher"
    kind: str  # threshold family: "time" | "memory" | "throughput" | "energy" | "ratio" | "info"
    gated: bool = True
    # Moved by what else the measuring process holds: compared only between runs measured in the same kind of
    # process (`RunRecord.in_caller`).
    per_process: bool = False
    # How the host's speed moves it, as the power of the host's slowness (`gate.hostspeed`): 1 a time the host
    # stretches, -1 a rate it slows, 0 neither (memory, energy, ratios to fp32 of the same trial, the probe itself).
    host_power: int = 0
    # Counted, not timed: the same call gives the same number in any process (host allocations repeated within 10 KB
    # over 22 one-thread invocations of each case here), so one value a side decides where a timing would be noisy.
    exact: bool = False


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("latency_s", "latency", "s", "lower", "time", host_power=1),
        Metric("throughput_sps", "throughput", "samples/s", "higher", "throughput", host_power=-1),
        Metric(HOST_ALLOC_PEAK, "host allocations peak", "MB", "lower", "memory", exact=True),
        # Shown, not gated: the pages a call faults in depend on the heap's layout, which differs between processes
        # (10-43 MB for the same one-thread call, 2026-12-03); HOST_ALLOC_PEAK is the host's gated figure.
        Metric("host_peak_mb", "host RSS rise (over pre-call)", "MB", "lower", "memory", gated=False, per_process=True),
        Metric("accel_peak_mb", "accelerator peak (allocator)", "MB", "lower", "memory"),
        Metric("nvml_device_peak_mb", "GPU peak (NVML, device)", "MB", "lower", "memory"),
        Metric("nvml_process_peak_mb", "GPU peak (NVML, process)", "MB", "lower", "memory"),
        Metric("energy_j", "energy", "J", "lower", "energy"),
        # Paired with fp32's round of the same trial (record.ratios): drift-free, gated on any machine.
        Metric("latency_vs_fp32", "latency / fp32", "x", "lower", "ratio"),
        Metric("peak_vs_fp32", "peak memory / fp32", "x", "lower", "ratio"),
        Metric("rtf", "real-time factor", "s/s", "lower", "info", gated=False, host_power=1),
        *(Metric(stage_metric(s), s, "s", "lower", "info", gated=False, host_power=1) for s in STAGES),
        Metric("semantic_tok_per_s", "semantic tokens/s", "tok/s", "higher", "info", gated=False, host_power=-1),
        Metric("coarse_tok_per_s", "coarse tokens/s", "tok/s", "higher", "info", gated=False, host_power=-1),
        Metric("fine_tok_per_s", "fine tokens/s", "tok/s", "higher", "info", gated=False, host_power=-1),
        Metric("codec_samples_per_s", "codec samples/s", "samples/s", "higher", "info", gated=False, host_power=-1),
        Metric("host_rss_peak_mb", "host RSS peak", "MB", "lower", "info", gated=False, per_process=True),
        Metric("overhead_s", "instrumentation overhead", "s", "lower", "info", gated=False, host_power=1),
        Metric(HOST_PROBE, "host speed probe", "s", "lower", "info", gated=False),
        Metric(INVOCATION_PROBE, "host speed probe, invocation's median", "s", "lower", "info", gated=False),
    )
}
