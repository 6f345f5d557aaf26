"""Every configuration against fp32 measured in the same run: ratios that drift cannot move.

The run loop interleaves the rounds of an invocation (`measure.run`): the k-th round of every benchmark in one
invocation comes from the same pass over all of them, seconds apart. The ratio of a configuration's k-th round to
fp32's k-th round at the same batch size cancels what drifts over minutes (machine load, clocks, a machine that is
slower today), so "fp16 no longer halves memory" or "fused attention is no longer faster than eager" shows on
any machine. The ratios are stored in the rounds (`latency_vs_fp32`, `peak_vs_fp32`) and gated like any metric
(threshold kind `ratio`).
"""

from __future__ import annotations

from perf_utils.record.metrics import memory_metric
from perf_utils.record.record import REFERENCE_CONFIG, BenchmarkResult, RunRecord

LATENCY_RATIO, PEAK_RATIO = "latency_vs_fp32", "peak_vs_fp32"


def add_ratios(record: RunRecord) -> None:
    """Pair every round with fp32's round of the same trial and batch size, and store the ratios in it."""
    for bs in record.batch_sizes():
        reference = next((r for r in record.measured(bs) if r.config == REFERENCE_CONFIG), None)
        if reference is None:
            continue
        memory = memory_metric(reference.metrics())
        ref_rounds = reference.by_trial()
        for result in record.measured(bs):
            if result is reference:
                continue
            for trial, r in result.by_trial().items():
                ref = ref_rounds.get(trial)
                if ref is None:
                    continue
                if ref.get("latency_s") and "latency_s" in r:
                    r[LATENCY_RATIO] = r["latency_s"] / ref["latency_s"]
                if ref.get(memory) and memory in r:
                    r[PEAK_RATIO] = r[memory] / ref[memory]


def vs_reference(result: BenchmarkResult, reference: BenchmarkResult | None, metric: str) -> float | None:
    """`result`'s change of `metric` against fp32 in the same run (-0.27: 27% less): the median of its paired
    per-trial ratios when the run stored them (drift-free), else the ratio of the two medians; None when either
    side did not measure it."""
    if reference is None or not result.ran or not reference.ran:
        return None
    paired = {"latency_s": LATENCY_RATIO, memory_metric(reference.metrics()): PEAK_RATIO}.get(metric)
    if paired is not None and (ratio := result.median(paired)) is not None:
        return ratio - 1
    now, ref = result.median(metric), reference.median(metric)
    return now / ref - 1 if now is not None and ref else None
