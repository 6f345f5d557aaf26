"""Summaries of per-round samples (the significance test lives with the comparison, in `gate.compare`)."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    mean: float
    stdev: float
    min: float
    max: float

    @property
    def cv(self) -> float:
        """Coefficient of variation: the spread a gate threshold must stay above."""
        return self.stdev / self.mean if self.mean else float("nan")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize(values: list[float]) -> Summary:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        nan = float("nan")
        return Summary(0, nan, nan, nan, nan, nan)
    return Summary(
        n=len(vals),
        median=statistics.median(vals),
        mean=statistics.fmean(vals),
        stdev=statistics.stdev(vals) if len(vals) > 1 else 0.0,
        min=min(vals),
        max=max(vals),
    )
