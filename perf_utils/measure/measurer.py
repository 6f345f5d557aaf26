"""Measure `generate` calls of one loaded configuration: every tracker around every call (the run loop in
`measure.run` decides how many calls, and when).

`Measurer.call()` is what a benchmark round runs; it returns one flat record of numbers (see `record.metrics`),
after checking the call did the fixed work.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

from transformers import set_seed

from perf_utils.bark.loading import LoadedBark
from perf_utils.bark.workload import Counts, Workload, check_counts, expected_counts, make_inputs
from perf_utils.measure.trackers import (
    AcceleratorMemoryTracker,
    EnergyTracker,
    HostMemoryTracker,
    LatencyTracker,
    NvmlMemoryTracker,
    StageTracker,
    Tracker,
    allocations,
)

_STAGE_WORK = {  # derived rate -> (stage time, Counts field)
    "semantic_tok_per_s": ("stage_semantic_s", "semantic_tokens"),
    "coarse_tok_per_s": ("stage_coarse_s", "coarse_tokens"),
    "fine_tok_per_s": ("stage_fine_s", "fine_tokens"),
    "codec_samples_per_s": ("stage_codec_s", "audio_samples"),
}


def derived_metrics(raw: dict[str, float], counts: Counts, sample_rate: int) -> dict[str, float]:
    """Throughput, real-time factor and per-stage rates from the raw timings and the work done."""
    latency, batch = raw["latency_s"], counts.batch_size
    audio_s = batch * counts.audio_samples / sample_rate
    out = {"throughput_sps": batch / latency, "rtf": latency / audio_s if audio_s else float("nan")}
    for rate, (stage, work) in _STAGE_WORK.items():
        if raw.get(stage):
            out[rate] = batch * getattr(counts, work) / raw[stage]
    return out


@dataclass
class Measurer:
    loaded: LoadedBark
    workload: Workload
    host_memory_sampling: bool = False
    # Runs inside the measured region (a timed round's, and the allocation call's); tests inject a known cost.
    inject: Callable[[], None] | None = None
    # Accelerator bytes held by other resident models (interleaved rounds), left out of the peaks.
    others_bytes: int = 0
    expected: Counts = field(init=False)
    inputs: dict[str, Any] = field(init=False)
    last_counts: Counts | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.inputs = make_inputs(self.loaded.processor, self.workload, self.loaded.device)
        self.expected = expected_counts(self.loaded.model, self.workload)

    @property
    def sample_rate(self) -> int:
        return int(self.loaded.model.generation_config.sample_rate)

    def _trackers(self) -> tuple[list[Tracker], LatencyTracker, StageTracker]:
        device = self.loaded.device
        outer: list[Tracker] = [
            HostMemoryTracker(force_sampling=self.host_memory_sampling),
            AcceleratorMemoryTracker(device, self.others_bytes),
            NvmlMemoryTracker(device, others=self.others_bytes),
            EnergyTracker(device),
        ]
        return outer, LatencyTracker(device), StageTracker(self.loaded.model, device)

    def allocation_peak(self) -> dict[str, float]:
        """One untimed call under memray (`trackers.allocations`): the host allocations' peak, which repeats
        within a few KB where the RSS rise of a timed round does not. Empty where they are not counted
        (`allocations.unavailable_reason`)."""
        if allocations.unavailable_reason(self.loaded.device.type):
            return {}
        set_seed(self.workload.seed)
        with allocations.AllocationTracker() as tracker:
            self._measured_region()
        return tracker.results()

    def _measured_region(self) -> None:
        """What every tracker is around: the `generate` call, and what a test injects."""
        self.loaded.model.generate(**self.inputs, **self.workload.generate_kwargs())
        if self.inject is not None:
            self.inject()

    def call(self) -> dict[str, float]:
        set_seed(self.workload.seed)
        outer, latency, stages = self._trackers()
        with ExitStack() as stack:
            for tracker in outer:
                stack.enter_context(tracker)
            with stages, latency:
                self._measured_region()
        counts = stages.counts()
        check_counts(counts, self.expected, f"configuration {self.loaded.config.name!r}")
        self.last_counts = counts
        raw: dict[str, float] = {}
        for tracker in (*outer, latency, stages):
            raw.update(tracker.results())
        raw["overhead_s"] = sum(t.overhead_s for t in (*outer, latency, stages))
        raw.update(derived_metrics(raw, counts, self.sample_rate))
        return raw
