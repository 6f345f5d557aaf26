"""One small tracker per kind of measurement (latency, memory, energy, stages), composed by `measure`."""

from perf_utils.trackers.base import Tracker
from perf_utils.trackers.energy import EnergyTracker
from perf_utils.trackers.latency import LatencyTracker
from perf_utils.trackers.memory import AcceleratorMemoryTracker, HostMemoryTracker, NvmlMemoryTracker
from perf_utils.trackers.stages import STAGES, StageTracker

__all__ = [
    "STAGES",
    "AcceleratorMemoryTracker",
    "EnergyTracker",
    "HostMemoryTracker",
    "LatencyTracker",
    "NvmlMemoryTracker",
    "StageTracker",
    "Tracker",
]
