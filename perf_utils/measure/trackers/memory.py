"""Peak memory of one call: host RSS, the accelerator allocator, and NVML's view of the GPU.

Host: the kernel's high-water mark (VmHWM), reset by writing 5 to /proc/self/clear_refs, is exact and free;
a sampling thread misses spikes and tracemalloc does not see torch. Weights are memory-mapped, so the
figure is the rise over the level before the call. Where clear_refs is not allowed, RSS is sampled and the
method is recorded so nobody compares the two silently.
"""

from __future__ import annotations

import resource
import threading
from pathlib import Path
from typing import Any

import torch

from perf_utils.bark import device as dev
from perf_utils.measure.trackers.base import Tracker
from perf_utils.measure.trackers.nvml import nvml_handle
from perf_utils.record.metrics import MB

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int:
    kb = _status_kb("VmRSS")
    if kb is not None:
        return kb * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # no /proc: best we have


def _load_libc() -> Any:
    """glibc, for malloc_trim and mallopt; None elsewhere (musl, macOS), where both are skipped."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


_LIBC = _load_libc()
MMAP_THRESHOLD = 1024 * 1024
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def pin_host_allocator() -> str | None:
    """glibc adapts its mmap threshold to the program's history (up to 32 MB), so the host peak of the same call
    moved 8-10% (7 MB at batch 8) between two processes that only imported different modules. Fixed at 1 MiB,
    allocations of that size and more are mapped and unmapped exactly, and the peak repeated within 1 MB here
    (bs8 fp32 126-132 MB over five rounds, against 141-164 MB unpinned). Returns the setting, which is recorded
    with the run (runs with other settings are not compared); None where glibc is not there."""
    if _LIBC is None:
        return None
    ok = _LIBC.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and _LIBC.mallopt(_M_TRIM_THRESHOLD, MMAP_THRESHOLD)
    return f"glibc mmap_threshold={MMAP_THRESHOLD // 1024}KiB" if ok else None


def release_freed_heap() -> None:
    """Hand memory freed by earlier calls back to the OS, so RSS before the call is live memory only and the
    call's own transient allocations show up as a rise (glibc keeps freed arenas resident otherwise)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def reset_high_water_mark() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kb("VmHWM") is not None


class _Poller:
    """Calls `read` every `interval_s` in a thread and keeps the maximum."""

    def __init__(self, read: Any, interval_s: float) -> None:
        self.read, self.interval_s = read, interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, self.read())
            if self._stop.wait(self.interval_s):
                self.peak = max(self.peak, self.read())
                return

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


class HostMemoryTracker(Tracker):
    name = "host_memory"

    def __init__(self, sample_interval_s: float = 0.002, force_sampling: bool = False) -> None:
        super().__init__()
        self.sample_interval_s = sample_interval_s
        self.force_sampling = force_sampling
        self.method = ""
        self.before = 0
        self.peak = 0
        self._poller: _Poller | None = None

    def start(self) -> None:
        release_freed_heap()
        self.before = rss_bytes()
        if not self.force_sampling and reset_high_water_mark():
            self.method = "vmhwm"
        else:
            self.method = "sampled"
            self._poller = _Poller(rss_bytes, self.sample_interval_s)
            self._poller.start()

    def stop(self) -> None:
        if self._poller is not None:
            self.peak = self._poller.stop()
        else:
            self.peak = (_status_kb("VmHWM") or 0) * 1024

    def results(self) -> dict[str, float]:
        return {"host_peak_mb": max(self.peak - self.before, 0) / MB, "host_rss_peak_mb": self.peak / MB}


class AcceleratorMemoryTracker(Tracker):
    """The caching allocator's peak (`max_memory_allocated`), reset before the call: the blog's figure. `others`:
    bytes held by other resident models (interleaved rounds keep several loaded), left out of the peak, so the
    figure is the one this model would show alone."""

    name = "accelerator_memory"

    def __init__(self, device: torch.device, others: int = 0) -> None:
        super().__init__()
        self.device = device
        self.others = others
        self.peak: int | None = None

    def start(self) -> None:
        dev.reset_peak_memory(self.device)

    def stop(self) -> None:
        peak = dev.max_memory_allocated(self.device)
        self.peak = None if peak is None else max(peak - self.others, 0)

    def results(self) -> dict[str, float]:
        return {} if self.peak is None else {"accel_peak_mb": self.peak / MB}


class NvmlMemoryTracker(Tracker):
    """What the driver sees (allocator cache, CUDA context, other libraries), device-wide and for this process,
    polled like optimum-benchmark's NVML tracker. `others`: bytes of other resident models, left out (as for the
    allocator's peak)."""

    name = "nvml_memory"

    def __init__(self, device: torch.device, interval_s: float = 0.01, others: int = 0) -> None:
        super().__init__()
        self.handle = nvml_handle(device)
        self.interval_s = interval_s
        self.others = others
        self._pollers: tuple[_Poller, _Poller] | None = None
        self.device_peak = self.process_peak = 0

    def _device_used(self) -> int:
        import pynvml

        return int(pynvml.nvmlDeviceGetMemoryInfo(self.handle).used)

    def _process_used(self) -> int:
        import os

        import pynvml

        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(self.handle):
            if proc.pid == os.getpid():
                return int(proc.usedGpuMemory or 0)
        return 0

    def start(self) -> None:
        if self.handle is None:
            return
        self._pollers = (
            _Poller(self._device_used, self.interval_s),
            _Poller(self._process_used, self.interval_s),
        )
        for p in self._pollers:
            p.start()

    def stop(self) -> None:
        if self._pollers is not None:
            self.device_peak, self.process_peak = (max(p.stop() - self.others, 0) for p in self._pollers)

    def results(self) -> dict[str, float]:
        if self._pollers is None:
            return {}
        return {"nvml_device_peak_mb": self.device_peak / MB, "nvml_process_peak_mb": self.process_peak / MB}
