"""One small tracker per kind of measurement (latency, memory, energy, stages), composed by `measure`."""

from perf_utils.measure.trackers.base import Tracker
from perf_utils.measure.trackers.energy import EnergyTracker
from perf_utils.measure.trackers.latency import LatencyTracker
from perf_utils.measure.trackers.memory import AcceleratorMemoryTracker, HostMemoryTracker, NvmlMemoryTracker
from perf_utils.measure.trackers.stages import STAGE_METHODS, StageTracker

__all__ = [
    "STAGE_METHODS",
    "AcceleratorMemoryTracker",
    "EnergyTracker",
    "HostMemoryTracker",
    "LatencyTracker",
    "NvmlMemoryTracker",
    "StageTracker",
    "Tracker",
]
