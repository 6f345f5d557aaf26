"""How good is the gate on this machine? False alarms on unchanged code, and the smallest slowdown caught.

A gate is only as good as its measured false-alarm rate (CodSpeed: a 2% gate on a 2.7%-CV runner alarms
45% of the time). This repeats unchanged runs of one configuration against a reference run, then runs with
injected slowdowns and extra memory of several sizes, and reports how often the gate calls each.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tabulate import tabulate

from perf_utils import configs, faults, loading
from perf_utils.compare import IMPROVED, REGRESSED, compare_result
from perf_utils.measure import Measurer
from perf_utils.record import ConfigResult
from perf_utils.runner import RunPlan
from perf_utils.stats import summarize
from perf_utils.thresholds import Thresholds


@dataclass
class QualityRow:
    label: str
    batch_size: int
    flagged: int = 0
    trials: int = 0
    changes: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.flagged / self.trials if self.trials else float("nan")


def _run(measurer: Measurer, plan: RunPlan, name: str, bs: int) -> ConfigResult:
    return ConfigResult(name, bs, "ok", rounds=measurer.rounds(plan.rounds, plan.warmup))


def _patched(model: Any, patch: Callable[[Any], None] | None) -> Callable[[], None]:
    """Apply a fault to the loaded model; returns the undo."""
    if patch is None:
        return lambda: None
    patch(model)
    return lambda: vars(model).pop("generate", None)


def measure_quality(
    plan: RunPlan,
    thresholds: Thresholds,
    config_name: str = "baseline",
    batch_sizes: Iterable[int] = (1,),
    repeats: int = 10,
    trials: int = 3,
    slowdowns: Iterable[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    buffers_mb: Iterable[int] = (2, 8, 32),
    progress: Callable[[str], None] | None = None,
) -> list[QualityRow]:
    loading.quiet_transformers()
    plan.apply()
    loaded = loading.load(plan.checkpoint, configs.get(config_name), plan.device)
    rows: list[QualityRow] = []
    try:
        for bs in batch_sizes:
            measurer = Measurer(loaded, plan.workload(bs))
            reference = _run(measurer, plan, config_name, bs)
            scenarios: list[tuple[str, str, Callable[[Any], None] | None, int]] = [
                ("unchanged (false alarms)", "any", None, repeats),
                *((f"slowdown +{s:.0%}", "latency_s", faults.slowdown(s), trials) for s in slowdowns),
                *((f"extra buffer {mb} MB", "host_peak_mb", faults.extra_buffer(mb), trials) for mb in buffers_mb),
            ]
            for label, metric, patch, n in scenarios:
                row = QualityRow(label, bs)
                for i in range(n):
                    if progress:
                        progress(f"bs{bs} {label}: run {i + 1}/{n}")
                    undo = _patched(loaded.model, patch)
                    try:
                        now = _run(measurer, plan, config_name, bs)
                    finally:
                        undo()
                    verdict = compare_result(reference, now, thresholds)
                    if metric == "any":
                        hit = verdict.verdict in (REGRESSED, IMPROVED)
                        change = verdict.metric("latency_s")
                    else:
                        change = verdict.metric(metric)
                        hit = change is not None and change.verdict == REGRESSED
                    row.flagged += hit
                    row.trials += 1
                    if change is not None:
                        row.changes.append(change.change)
                rows.append(row)
            cv = summarize(reference.values("latency_s")).cv
            rows.append(QualityRow(f"(latency CV of the reference rounds: {cv:.1%})", bs))
    finally:
        loading.unload(loaded)
    return rows


def quality_table(rows: list[QualityRow], thresholds: Thresholds) -> str:
    body = []
    for r in rows:
        if not r.trials:
            body.append([f"bs{r.batch_size}", r.label, "", "", ""])
            continue
        med = summarize(r.changes).median if r.changes else float("nan")
        body.append([f"bs{r.batch_size}", r.label, f"{r.flagged}/{r.trials}", f"{r.rate:.0%}", f"{med:+.1%}"])
    table = tabulate(
        body, headers=["batch", "scenario", "flagged", "rate", "median measured change"], tablefmt="github"
    )
    th = thresholds
    return (
        table + f"\n\nthresholds: time {th.time:.0%}, throughput {th.throughput:.0%}, memory {th.memory:.0%} "
        f"and {th.memory_floor_mb:g} MB, significance p<{th.alpha} (one-sided Mann-Whitney U)"
    )
