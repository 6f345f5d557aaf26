"""The blog's figures beside ours: what the Hugging Face "Optimizing Bark" post measured (bark large, TITAN RTX,
256 semantic tokens), as data, and the same relative figures from a run, so a GPU check says at a glance whether
today's stack still shows the blog's shape.

Each claim is a configuration's change against fp32 at one batch size; from a run it is read from the paired
per-trial ratios when the run stored them (`record.ratios`), else from the ratio of medians.
"""

from __future__ import annotations

from dataclasses import dataclass

from tabulate import tabulate

from perf_utils.record.metrics import memory_metric
from perf_utils.record.ratios import vs_reference
from perf_utils.record.record import REFERENCE_CONFIG, RunRecord, benchmark_id


@dataclass(frozen=True)
class Claim:
    config: str
    batch_size: int
    what: str  # "latency" | "peak memory" | "throughput"
    blog: float  # relative change against fp32 (-0.27: 27% less)


CLAIMS = (
    Claim("bettertransformer", 1, "latency", -0.27),
    Claim("cpu_offload", 1, "peak memory", -0.59),
    Claim("offload+fp16", 1, "peak memory", -0.80),
    Claim("fp16", 8, "latency", -0.46),
    Claim("fp16", 8, "peak memory", -0.50),
    Claim("fp16", 8, "throughput", 0.78 / 0.42 - 1),  # 0.42 -> 0.78 samples/s
)


def measured(record: RunRecord, claim: Claim) -> float | None:
    """The run's change of `claim` against fp32 (`record.ratios.vs_reference`), or None when it did not measure
    both."""
    by_id = record.by_id()
    now = by_id.get(benchmark_id(claim.config, claim.batch_size))
    ref = by_id.get(benchmark_id(REFERENCE_CONFIG, claim.batch_size))
    if now is None or ref is None:
        return None
    metric = {"latency": "latency_s", "throughput": "throughput_sps"}.get(claim.what)
    return vs_reference(now, ref, metric or memory_metric(set(ref.metrics())))


def claims_table(record: RunRecord) -> str:
    """Each of the blog's claims, its figure and this run's."""
    rows = []
    for c in CLAIMS:
        got = measured(record, c)
        rows.append([f"bs{c.batch_size}-{c.config}", c.what, f"{c.blog:+.0%}", "-" if got is None else f"{got:+.0%}"])
    headers = ["benchmark", "against fp32", "blog (bark large, TITAN RTX)", f"this run ({record.checkpoint['key']})"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def throughput_by_batch_size(record: RunRecord) -> dict[str, dict[int, float]]:
    """The blog's batching question read from a run: each configuration's median throughput (samples/s) at each
    batch size it measured, configurations in run order. One reading for `batching_table` and
    `plots.batching_figure`, so the table and the figure show the same numbers."""
    series: dict[str, dict[int, float]] = {}
    for r in record.measured():
        if (sps := r.median("throughput_sps")) is not None:
            series.setdefault(r.config, {})[r.batch_size] = sps
    return series


def batching_table(record: RunRecord) -> str:
    """The blog's batching question as numbers beside `plots.batching_figure`: each configuration's median
    throughput per batch size, and its gain over the batch size before it, so where the gain falls towards 0%
    a larger batch stops paying ("" when the run measured fewer than two batch sizes)."""
    sizes = record.batch_sizes()
    if len(sizes) < 2:
        return ""
    rows = []
    for config, points in throughput_by_batch_size(record).items():
        row, before = [config], None
        for bs in sizes:
            sps = points.get(bs)
            cell = "-" if sps is None else f"{sps:.2f}"
            if sps is not None and before:
                cell += f" ({sps / before - 1:+.0%})"
            row.append(cell)
            before = sps
        rows.append(row)
    headers = ["samples/s (gain on the batch before)", *(f"bs{bs}" for bs in sizes)]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)
