"""Each measurement against a known quantity: a sleep of known length, an allocation of known size, a stage
slowed down by a known delay. The machine is a noisy shared 2-core box, and noise only ever *adds* time, so
checks compare the least-disturbed samples (minimums) and collect a few more when noise got in the way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from perf_utils.bark import device as dev
from perf_utils.bark.loading import LoadedBark
from perf_utils.bark.workload import Workload
from perf_utils.measure.measurer import Measurer
from perf_utils.measure.run import RunPlan, new_record
from perf_utils.measure.settings import ONEDNN_CACHE, ONEDNN_CACHE_VAR, size_onednn_cache
from perf_utils.measure.trackers import (
    AcceleratorMemoryTracker,
    EnergyTracker,
    HostMemoryTracker,
    LatencyTracker,
    NvmlMemoryTracker,
    StageTracker,
    allocations,
)
from perf_utils.measure.trackers.memory import reset_high_water_mark
from perf_utils.record import store
from perf_utils.record.metrics import HOST_ALLOC_PEAK, MB, STAGES

CPU = torch.device("cpu")
BUFFER_ELEMENTS = 64 * 1024 * 1024  # float32: 256 MiB
SUBMODELS = ("semantic", "coarse_acoustics", "fine_acoustics")
MAX_ATTEMPTS = 6

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def measurer(torch_single_thread: None, loaded_fp32: LoadedBark) -> Measurer:
    m = Measurer(loaded_fp32, Workload(n_tokens=32, batch_size=1))
    m.call()  # warm-up: first-call effects must not be billed to any comparison below
    return m


@pytest.fixture(scope="module")
def records(measurer: Measurer) -> list[dict[str, float]]:
    """Two plain measured calls, shared by the tests that only read a record."""
    return [measurer.call() for _ in range(2)]


def _stage(records: list[dict[str, float]], stage: str) -> float:
    return min(r[f"stage_{stage}_s"] for r in records)


def _until(check: Callable[[], bool], collect: Callable[[], None], first: int = 2) -> None:
    """Collect `first` samples, then more (up to MAX_ATTEMPTS) until `check` holds on them."""
    for attempt in range(MAX_ATTEMPTS):
        collect()
        if attempt + 1 >= first and check():
            return


# --- (a) latency ------------------------------------------------------------------------------------------------


def test_latency_tracker_times_a_known_sleep() -> None:
    with LatencyTracker(CPU) as tracker:
        time.sleep(0.2)
    latency = tracker.results()["latency_s"]
    assert 0.2 <= latency < 2.0


def test_latency_tracker_before_use_is_nan() -> None:
    latency = LatencyTracker(CPU).results()["latency_s"]
    assert latency != latency  # NaN: never a plausible-looking zero


# --- (b) host memory --------------------------------------------------------------------------------------------


def _allocate_and_touch(keep_s: float = 0.0) -> None:
    buffer = torch.ones(BUFFER_ELEMENTS, dtype=torch.float32)  # every page written: resident, not just reserved
    assert buffer.numel() * buffer.element_size() == 256 * MB
    if keep_s:
        time.sleep(keep_s)
    del buffer


def test_host_memory_high_water_mark_sees_a_256_mib_buffer() -> None:
    if not reset_high_water_mark():
        pytest.skip("/proc/self/clear_refs is not writable here: the exact VmHWM method is unavailable")
    with HostMemoryTracker() as tracker:
        _allocate_and_touch()  # freed before the tracker stops: only the high-water mark still knows
    assert tracker.method == "vmhwm"
    results = tracker.results()
    assert results["host_peak_mb"] >= 240, results
    assert results["host_rss_peak_mb"] >= results["host_peak_mb"]


def test_host_memory_sampling_fallback_sees_a_256_mib_buffer() -> None:
    with HostMemoryTracker(force_sampling=True) as tracker:
        _allocate_and_touch(keep_s=0.25)
    assert tracker.method == "sampled"
    assert tracker.results()["host_peak_mb"] >= 240, tracker.results()


def test_host_memory_freed_before_the_call_is_not_billed_to_it() -> None:
    _allocate_and_touch()
    with HostMemoryTracker() as tracker:
        small = torch.ones(1024)
        del small
    assert tracker.results()["host_peak_mb"] < 64, tracker.results()


def _counted(work: Callable[[], object]) -> float:
    with allocations.AllocationTracker() as tracker:
        work()
    return tracker.results()[HOST_ALLOC_PEAK]


def test_host_allocations_count_what_was_live_at_once_small_or_large_and_repeat_exactly() -> None:
    """memray counts each allocation, so 4,000 tensors of 4 KiB live at once (below glibc's mmap threshold: heap
    pages, which an RSS rise may not see) read 16 MiB as one 64 MiB tensor reads 64 MiB, and a buffer freed before
    the next is allocated is not added to it. The same work counts the same, in the tracker's own process."""
    assert allocations.unavailable_reason() is None, "memray is a dependency (requirements/measure.txt)"

    def small() -> None:
        live = [torch.empty(1024) for _ in range(4000)]  # 4,000 x 4 KiB
        del live

    def one_after_another() -> None:
        for _ in range(3):
            big = torch.empty(16 * 1024 * 1024)  # 64 MiB, freed before the next
            big.fill_(1.0)
            del big

    counts = [_counted(small) for _ in range(3)]
    # 15.6 MiB of tensor data, plus torch's bookkeeping per tensor; the first time also ~1 MiB the interpreter keeps
    assert all(15.6 <= c <= 18 for c in counts), counts
    assert counts[1] == counts[2], counts  # once warm, to the byte (as the run loop counts: after its trials)
    assert 64 <= _counted(one_after_another) <= 65, "a freed buffer is not counted again"


def test_without_memray_no_host_allocations_are_recorded_and_the_reason_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, measurer: Measurer
) -> None:
    def missing() -> None:
        raise ImportError("No module named 'memray'")

    monkeypatch.setattr(allocations, "_memray", missing)
    reason = allocations.unavailable_reason()
    assert reason is not None and "pip install memray" in reason and "No module named 'memray'" in reason
    assert measurer.allocation_peak() == {}


def test_host_allocations_are_counted_on_the_cpu_only() -> None:
    """On an accelerator the allocator's peak is the memory judged: no extra call per case spends its time."""
    assert allocations.unavailable_reason("cpu") is None
    reason = allocations.unavailable_reason("cuda")
    assert reason is not None and "on cuda the allocator's peak is the memory judged" in reason


def test_the_allocation_call_counts_what_the_measured_region_allocates(measurer: Measurer) -> None:
    """The call the run loop counts is the round's call: a buffer injected into the measured region (as the
    gate's tests inject a known cost) is counted. It is allocated after `generate` freed its own, so the peak is
    the buffer's 256 MiB, not the sum: what was live at once."""
    plain = measurer.allocation_peak()[HOST_ALLOC_PEAK]
    measurer.inject = _allocate_and_touch
    try:
        more = measurer.allocation_peak()[HOST_ALLOC_PEAK]
    finally:
        measurer.inject = None
    assert 1 < plain < 256 <= more <= 256.1, (plain, more)


def _eight_live_4mb_tensors() -> None:
    live = [torch.ones(1024 * 1024) for _ in range(8)]  # 8 x 4 MiB, all resident at once
    del live


_PINNED_PEAKS = """
import json, torch
from perf_utils.measure.trackers.memory import HostMemoryTracker, pin_host_allocator, reset_high_water_mark
if not reset_high_water_mark():
    print(json.dumps({"skip": "/proc/self/clear_refs is not writable: the exact VmHWM method is unavailable"}))
    raise SystemExit
setting = pin_host_allocator()
if setting is None:
    print(json.dumps({"skip": "not glibc: the host allocator cannot be pinned here"}))
    raise SystemExit
peaks = []
for _ in range(5):
    big = torch.ones(64 * 1024 * 1024)  # 256 MiB allocated and freed in between: it must not change the next peak
    del big
    with HostMemoryTracker() as tracker:
        live = [torch.ones(1024 * 1024) for _ in range(8)]  # 8 x 4 MiB, all resident at once
        del live
    peaks.append(tracker.results()["host_peak_mb"])
print(json.dumps({"setting": setting, "peaks": peaks}))
"""


def test_pinned_host_allocator_makes_the_peak_repeat() -> None:
    """With the allocator pinned (as every run does), the same work has the same host peak, equal to what was
    live: 32 MiB here, every time, whatever was allocated and freed before. Pinning is process-wide and glibc
    cannot undo it, so it happens in a process of its own, not in this test session."""
    done = subprocess.run([sys.executable, "-c", _PINNED_PEAKS], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    if "skip" in found:
        pytest.skip(found["skip"])
    peaks = found["peaks"]
    assert found["setting"] == "glibc mmap_threshold=1024KiB"
    assert max(peaks) - min(peaks) < 1.0, peaks
    assert 31 <= min(peaks) <= 34, peaks


def test_the_allocator_setting_is_part_of_the_workload(tiny_checkpoint) -> None:
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), 16, 1, 0)
    assert new_record(plan, "glibc mmap_threshold=1024KiB").workload["host_allocator"] == "glibc mmap_threshold=1024KiB"
    assert new_record(plan, None).workload["host_allocator"] is None


# --- (c) stages -------------------------------------------------------------------------------------------------


def test_a_slower_stage_shows_up_in_that_stage_only(loaded_fp32: LoadedBark, measurer: Measurer) -> None:
    fine = loaded_fp32.model.fine_acoustics
    original = fine.generate

    def slow_fine(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)
        return original(*args, **kwargs)

    plain: list[dict[str, float]] = []
    slowed: list[dict[str, float]] = []

    def collect() -> None:  # interleaved, so a burst of load hits both kinds of call alike
        plain.append(measurer.call())
        fine.generate = slow_fine  # an instance attribute: the StageTracker wraps it, and must put it back
        try:
            slowed.append(measurer.call())
            assert vars(fine).get("generate") is slow_fine, "the StageTracker dropped an existing instance patch"
        finally:
            del fine.generate

    def growth() -> dict[str, float]:
        return {s: _stage(slowed, s) - _stage(plain, s) for s in STAGES}

    def ok() -> bool:
        g = growth()
        return g["fine"] >= 0.4 and all(g[s] < 0.3 for s in STAGES if s != "fine")

    _until(ok, collect)
    g = growth()
    assert g["fine"] >= 0.4, g
    for stage in STAGES:
        if stage != "fine":
            assert g[stage] < 0.3, (stage, g)
    assert "generate" not in vars(fine)
    for r in slowed:  # the sleep is a floor: inside the fine stage, and so inside the latency
        assert r["stage_fine_s"] >= 0.5, r
        assert r["latency_s"] >= sum(r[f"stage_{s}_s"] for s in STAGES), r


def test_stages_cover_the_call(records: list[dict[str, float]]) -> None:
    for record in records:
        stages = sum(record[f"stage_{s}_s"] for s in STAGES)
        assert set(STAGES) == {k[len("stage_") : -len("_s")] for k in record if k.startswith("stage_")}
        assert all(record[f"stage_{s}_s"] > 0 for s in STAGES)
        assert stages <= record["latency_s"]
        assert stages >= 0.5 * record["latency_s"]  # generate is its four stages plus glue


# --- (d) restoring what was there -------------------------------------------------------------------------------


def _no_instance_patches(model: Any) -> None:
    for name in SUBMODELS:
        assert "generate" not in vars(getattr(model, name)), f"{name}.generate left patched"
    assert "codec_decode" not in vars(model), "codec_decode left patched"


def test_stage_tracker_restores_the_methods(loaded_fp32: LoadedBark, measurer: Measurer) -> None:
    model = loaded_fp32.model
    _no_instance_patches(model)
    measurer.call()
    _no_instance_patches(model)
    assert type(model.fine_acoustics).generate is model.fine_acoustics.generate.__func__


def test_stage_tracker_restores_the_methods_when_the_call_fails(loaded_fp32: LoadedBark) -> None:
    def boom() -> None:
        raise RuntimeError("injected failure")

    failing = Measurer(loaded_fp32, Workload(n_tokens=32, batch_size=1), inject=boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        failing.call()
    _no_instance_patches(loaded_fp32.model)


def test_stage_tracker_patches_only_while_active(loaded_fp32: LoadedBark) -> None:
    model = loaded_fp32.model
    tracker = StageTracker(model, CPU)
    with tracker:
        for name in SUBMODELS:
            assert "generate" in vars(getattr(model, name))
        assert "codec_decode" in vars(model)
    _no_instance_patches(model)
    assert tracker.results() == {}  # nothing ran: no made-up stage times


# --- (e) derived metrics ----------------------------------------------------------------------------------------


def test_derived_metrics_follow_from_the_raw_ones(measurer: Measurer, records: list[dict[str, float]]) -> None:
    counts = measurer.last_counts
    assert counts is not None
    assert measurer.sample_rate == 24_000
    for r in records:
        batch = counts.batch_size
        assert r["throughput_sps"] == pytest.approx(batch / r["latency_s"], rel=1e-12)
        audio_s = batch * counts.audio_samples / measurer.sample_rate
        assert r["rtf"] == pytest.approx(r["latency_s"] / audio_s, rel=1e-12)
        assert r["semantic_tok_per_s"] == pytest.approx(batch * counts.semantic_tokens / r["stage_semantic_s"])
        assert r["fine_tok_per_s"] == pytest.approx(batch * counts.fine_tokens / r["stage_fine_s"])
        assert r["codec_samples_per_s"] == pytest.approx(batch * counts.audio_samples / r["stage_codec_s"])


def test_derived_metrics_at_batch_two(loaded_fp32: LoadedBark) -> None:
    m = Measurer(loaded_fp32, Workload(n_tokens=32, batch_size=2))
    r = m.call()
    assert m.last_counts is not None and m.last_counts.batch_size == 2
    assert r["throughput_sps"] == pytest.approx(2 / r["latency_s"], rel=1e-12)
    assert r["rtf"] == pytest.approx(r["latency_s"] / (2 * m.last_counts.audio_samples / 24_000), rel=1e-12)


# --- (f) instrumentation overhead -------------------------------------------------------------------------------


def test_instrumentation_overhead_is_under_two_percent(records: list[dict[str, float]]) -> None:
    ratios = [r["overhead_s"] / r["latency_s"] for r in records]
    assert all(r["overhead_s"] > 0 for r in records)  # the bookkeeping is accounted, not assumed free
    assert min(ratios) < 0.02, ratios


# --- (g) inject -------------------------------------------------------------------------------------------------


def test_inject_runs_inside_the_measured_region(loaded_fp32: LoadedBark, records: list[dict[str, float]]) -> None:
    """The injected 0.3 s lands in the latency and in no stage.

    Comparing two calls' raw latencies would put Bark's own run-to-run noise (a few hundred ms here when another
    process shares the cores) into the result, so each call's latency is compared with its own stage work: the
    part of the latency no stage explains must grow by the sleep."""
    injected = Measurer(loaded_fp32, Workload(n_tokens=32, batch_size=1), inject=lambda: time.sleep(0.3))

    def outside_stages(r: dict[str, float]) -> float:
        return r["latency_s"] - sum(r[f"stage_{s}_s"] for s in STAGES)

    plain = min(outside_stages(r) for r in records)
    for r in (injected.call(), injected.call()):
        # the sleep is a floor: inside the latency, outside every stage
        assert r["latency_s"] >= 0.3 + sum(r[f"stage_{s}_s"] for s in STAGES), r
        assert outside_stages(r) - plain >= 0.25, (outside_stages(r), plain)


# --- (h) accelerator trackers on the CPU ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [AcceleratorMemoryTracker, NvmlMemoryTracker, EnergyTracker],
    ids=["accelerator_memory", "nvml_memory", "energy"],
)
def test_accelerator_trackers_report_nothing_on_cpu(make: Callable[[torch.device], Any]) -> None:
    with make(CPU) as tracker:
        _ = torch.ones(1024) * 2
    assert tracker.results() == {}


def test_a_cpu_record_has_no_accelerator_metrics(records: list[dict[str, float]]) -> None:
    for r in records:
        assert not {k for k in r if k.startswith(("accel_", "nvml_", "energy"))}
        assert {"latency_s", "host_peak_mb", "host_rss_peak_mb", "overhead_s", "throughput_sps", "rtf"} <= set(r)


def test_peak_reset_before_the_accelerator_is_first_used_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    """CUDA raises 'Invalid device argument' when asked to reset peaks before its first use (seen on an H200)."""
    resets: list[torch.device] = []
    monkeypatch.setattr(torch.accelerator, "reset_peak_memory_stats", resets.append)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    dev.reset_peak_memory(torch.device("cuda", 0))
    assert resets == []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    dev.reset_peak_memory(torch.device("cuda", 0))
    assert resets == [torch.device("cuda", 0)]
    dev.reset_peak_memory(CPU)
    assert len(resets) == 1


@pytest.fixture
def accelerator() -> Iterator[torch.device]:
    if not torch.accelerator.is_available():
        pytest.skip("needs an accelerator (torch.accelerator.is_available() is False)")
    device = dev.resolve_device("auto")
    dev.release_memory(device)
    yield device
    dev.release_memory(device)


@pytest.mark.gpu
def test_accelerator_peak_rises_by_a_known_allocation(accelerator: torch.device) -> None:
    before = dev.memory_allocated(accelerator)
    assert before is not None
    with AcceleratorMemoryTracker(accelerator) as tracker:
        buffer = torch.ones(BUFFER_ELEMENTS, dtype=torch.float32, device=accelerator)
        del buffer
    rise_mb = tracker.results()["accel_peak_mb"] - before / MB
    assert 256 <= rise_mb < 256 + 32, rise_mb
    # a tracker started afterwards does not see the earlier peak: it was reset at start
    with AcceleratorMemoryTracker(accelerator) as later:
        pass
    assert later.results()["accel_peak_mb"] < before / MB + 32


_KERNEL_CACHE = """
import torch
from perf_utils.measure.settings import size_onednn_cache
print("capacity", size_onednn_cache(), flush=True)
lstm = torch.nn.LSTM(4, 4)  # oneDNN's RNN on the CPU: a kernel per sequence length
with torch.no_grad():
    for n in range(1, 1101):  # more than oneDNN's default 1024 kernels
        lstm(torch.randn(n, 1, 4))
    print("AGAIN", flush=True)
    for n in range(1, 51):  # the oldest: evicted by a cache of 1024, kept by the suite's
        lstm(torch.randn(n, 1, 4))
"""


def _kernels_compiled_again(env: dict[str, str]) -> tuple[str, int]:
    """In a process of its own (oneDNN reads its capacity once), with oneDNN saying what it compiles: the capacity
    `size_onednn_cache` gave, and how many kernels the second pass over the oldest shapes compiled again."""
    done = subprocess.run([sys.executable, "-c", _KERNEL_CACHE], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ONEDNN_VERBOSE": "profile_create", **env})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    first, again = done.stdout.split("AGAIN", 1)
    if "cache_miss" not in first:
        pytest.skip("this torch's oneDNN compiled no RNN kernel here (built without it, or verbose off)")
    return first.splitlines()[0], again.count("cache_miss")


def test_every_interleaved_case_keeps_its_onednn_kernels(monkeypatch) -> None:
    """Measuring processes size oneDNN's kernel cache before their first call: 1100 shapes' kernels, then the 50
    oldest again, compile nothing more; with oneDNN's default (a value the user set is kept) all 50 again, as the
    interleaved cases of a half-precision run evicted each other's (measure/settings.py)."""
    monkeypatch.delenv(ONEDNN_CACHE_VAR, raising=False)
    assert _kernels_compiled_again({}) == (f"capacity {ONEDNN_CACHE}", 0)
    assert _kernels_compiled_again({ONEDNN_CACHE_VAR: "1024"}) == ("capacity 1024", 50)


def test_the_onednn_cache_is_recorded_with_the_run(tiny_checkpoint, monkeypatch) -> None:
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), 16, 1, 0)
    monkeypatch.setenv(ONEDNN_CACHE_VAR, "2048")
    assert size_onednn_cache() == 2048 and new_record(plan, None).environment[store.ONEDNN_CACHE_KEY] == 2048
    monkeypatch.delenv(ONEDNN_CACHE_VAR)
    assert size_onednn_cache() == ONEDNN_CACHE
    assert new_record(plan, None).environment[store.ONEDNN_CACHE_KEY] == ONEDNN_CACHE


def test_a_failed_allocation_count_is_said_and_the_rounds_stand(tiny_checkpoint, monkeypatch) -> None:
    """memray refusing (another tracker active, say: pytest-memray) after the rounds were measured: the benchmark
    keeps its rounds, the count is left out, and the progress says why."""
    from perf_utils.bark import configs
    from perf_utils.measure.run import Case, Run
    from perf_utils.record.record import OK

    def refuse(self: allocations.AllocationTracker) -> None:
        raise RuntimeError("No more than one Tracker instance can be active at the same time")

    monkeypatch.setattr(allocations.AllocationTracker, "start", refuse)
    lines: list[str] = []
    plan = RunPlan(tiny_checkpoint, CPU, n_tokens=8, rounds=1, warmup=0, invocations=1)
    [result] = (
        Run(plan, progress=lines.append, check_fidelity=False).measure_all([Case(configs.get("fp32"), 1)]).results
    )
    assert result.status == OK and len(result.rounds) == 1 and HOST_ALLOC_PEAK not in result.rounds[0]
    said = "bs1-fp32: host allocations not counted (RuntimeError: No more than one Tracker instance"
    assert any(line.startswith(said) for line in lines), lines
