"""Energy of one call from NVML's cumulative energy counter (Volta and newer NVIDIA GPUs).

Reading a counter before and after costs nothing and misses no spike, unlike sampling power.
"""

from __future__ import annotations

from typing import Any

import torch

from perf_utils.measure.trackers.base import Tracker
from perf_utils.measure.trackers.nvml import nvml_handle


class EnergyTracker(Tracker):
    name = "energy"

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.handle: Any = nvml_handle(device)
        self._start_mj: int | None = None
        self.energy_j: float | None = None

    def _read(self) -> int | None:
        if self.handle is None:
            return None
        import pynvml

        try:
            return int(pynvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except pynvml.NVMLError:  # counter not supported on this GPU
            return None

    def start(self) -> None:
        self._start_mj = self._read()

    def stop(self) -> None:
        end = self._read()
        if self._start_mj is not None and end is not None:
            self.energy_j = (end - self._start_mj) / 1000.0

    def results(self) -> dict[str, float]:
        return {} if self.energy_j is None else {"energy_j": self.energy_j}
