"""Peak of the bytes one call allocated on the host and still held, counted by memray at every malloc, mmap,
Python object and their frees.

Why beside the RSS rise (`memory.HostMemoryTracker`): the rise counts pages the kernel had to fault in, so a call
whose small allocations land in pages the heap already holds shows less than one whose land in pages
`malloc_trim` returned. Which happens depends on the process's heap layout: at one thread the same batch-1 call
read 10-43 MB between invocations (2026-12-03). The bytes allocated do not depend on it: the same call counted
15.873-15.883 MB (fp32) and 7.992-7.997 MB (fp16) in 22 processes of the one-thread lane. memray intercepts each
allocation (a call takes 15-90% longer under it), so the run loop takes this figure in an untimed call of its own
per case and invocation, after its trials (`Measurer.allocation_peak`), never around a timed round.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from perf_utils.measure.trackers.base import Tracker
from perf_utils.record.metrics import HOST_ALLOC_PEAK, MB


def _memray() -> Any:
    import memray

    return memray


def unavailable_reason(device_type: str = "cpu") -> str | None:
    """Why host allocations are not counted in a run on `device_type`, or None. On an accelerator the allocator's
    own peak is the memory judged (counted too), and an extra call per case would spend accelerator time."""
    if device_type != "cpu":
        return f"on {device_type} the allocator's peak is the memory judged: host allocations are counted on the CPU"
    try:
        _memray()
    except ImportError as exc:
        return f"memray is not importable ({exc}): pip install memray (Linux or macOS)"
    return None


class AllocationTracker(Tracker):
    """memray around one call, writing only its high-water mark (the aggregated format: a few KB) to a temporary
    file that is read back and removed."""

    name = "host_allocations"

    def __init__(self) -> None:
        super().__init__()
        self.peak: int | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._tracker: Any = None

    @property
    def _path(self) -> Path:
        assert self._dir is not None, "started"
        return Path(self._dir.name) / "call.bin"

    def start(self) -> None:
        memray = _memray()
        self._dir = tempfile.TemporaryDirectory(prefix="bark-perf-memray-")
        self._tracker = memray.Tracker(
            destination=memray.FileDestination(str(self._path), overwrite=True),
            file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS,
            # Python's objects one by one, not the 1 MiB arenas pymalloc maps for them: whether a call needs a new
            # arena depends on how full the process's arenas are, and one-thread counts moved by exactly 1 MiB
            # between invocations (4 of 10 for bs1-fp32); counted object by object they repeat within 10 KB.
            trace_python_allocators=True,
        )
        self._tracker.__enter__()

    def stop(self) -> None:
        assert self._tracker is not None and self._dir is not None
        try:
            self._tracker.__exit__(None, None, None)
            self.peak = int(_memray().FileReader(str(self._path)).metadata.peak_memory)
        finally:
            self._dir.cleanup()

    def results(self) -> dict[str, float]:
        return {} if self.peak is None else {HOST_ALLOC_PEAK: self.peak / MB}
