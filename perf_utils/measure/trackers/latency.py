"""Wall-clock latency that is right on an accelerator: synchronize before reading the clock.

Device events would time only the kernels of one stream; Bark's host-side sampling loop is part of what a
user waits for, so a synchronized host clock is the honest figure (what the blog's events measured too,
since it synchronized before reading them).
"""

from __future__ import annotations

import time

import torch

from perf_utils.bark import device as dev
from perf_utils.measure.trackers.base import Tracker


class LatencyTracker(Tracker):
    name = "latency"

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.device = device
        self.elapsed_s = float("nan")
        self._start = 0.0

    def __enter__(self) -> LatencyTracker:
        dev.synchronize(self.device)  # queued work from before must not be billed to this call
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        dev.synchronize(self.device)
        self.elapsed_s = time.perf_counter() - self._start

    def results(self) -> dict[str, float]:
        return {"latency_s": self.elapsed_s}
