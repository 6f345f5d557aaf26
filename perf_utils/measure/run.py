"""The one run loop: every entry point (pytest, `python -m perf_utils run`, gate-quality) measures through `Run`.

A run is a plan (checkpoint, device, workload, rounds) and a list of cases (configuration x batch size). The loop
decides their order (`order`: configuration by configuration, so each model loads once for all its batch
sizes and is freed before the next loads, and one configuration's memory never shows in another's peak), checks
availability, loads, measures the rounds, checks fidelity against the fp32 eager reference, and builds the
record. The caller only says how rounds are timed (`timed`: pytest-benchmark's `pedantic`, or a plain loop).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

import perf_utils
from perf_utils.bark import checkpoints, configs, loading
from perf_utils.bark.checkpoints import Checkpoint
from perf_utils.bark.configs import OptimizationConfig
from perf_utils.bark.device import resolve_device
from perf_utils.bark.environment import Stack, current_stack, hardware_key
from perf_utils.bark.loading import LoadedBark
from perf_utils.bark.workload import Workload, default_tokens
from perf_utils.measure import fidelity
from perf_utils.measure.measurer import Measurer
from perf_utils.measure.trackers.memory import pin_host_allocator
from perf_utils.options import RunOptions
from perf_utils.record.fidelity import Fidelity
from perf_utils.record.record import FAILED, OK, UNAVAILABLE, BenchmarkResult, RunRecord, benchmark_id

Progress = Callable[[str], None]
# How the measured rounds of one benchmark are timed: `timed(one_call, rounds, warmup)` (the loop warms up itself,
# and passes warmup=0).
Timed = Callable[[Callable[[], None], int, int], None]
WARMUP_CAP = 10  # at most this many warm-up calls, however long the rounds keep improving
WARMUP_TOLERANCE = 0.02  # a call more than this much faster than every earlier one: still warming up

# What every configuration's fidelity is measured against: never the registry's `fp32`, which a test may have
# replaced with a faulty copy.
REFERENCE = OptimizationConfig("reference", "fp32, eager attention, unpatched: the fidelity reference")


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def warm_up(call: Callable[[], float], least: int, most: int = WARMUP_CAP, tolerance: float = WARMUP_TOLERANCE) -> int:
    """Warm up to a steady state instead of for a count assumed to be enough: call (it returns the call's latency)
    at least `least` times and at least twice, then until a call is no longer faster than every earlier one by
    more than `tolerance`; at most `most` times. `least` 0 is no warm-up at all (a cold measurement). Returns how
    many calls it took."""
    if least <= 0:
        return 0
    times: list[float] = []
    while len(times) < max(most, 1):
        times.append(call())
        if len(times) >= max(least, 2) and times[-1] >= min(times[:-1]) * (1 - tolerance):
            break
    return len(times)


def plain_rounds(fn: Callable[[], None], rounds: int, warmup: int) -> None:
    """Warm-up calls, then measured ones: what `timed` is outside pytest."""
    for _ in range(warmup + rounds):
        fn()


@dataclass(frozen=True)
class RunPlan:
    checkpoint: Checkpoint
    device: torch.device
    n_tokens: int
    rounds: int
    warmup: int  # the least number of warm-up calls: they go on until the rounds stop improving (warm_up)
    threads: int | None = None  # CPU intra-op threads; None keeps torch's default

    def apply(self) -> str | None:
        """Process-wide settings of the plan. One thread makes a CPU tier robust to a busy machine: two threads
        fighting another process for two cores made a tiny call ~20x slower here. The host allocator is pinned
        so host peaks repeat (trackers.memory.pin_host_allocator); returns that setting."""
        if self.threads:
            torch.set_num_threads(self.threads)
        return pin_host_allocator()

    @classmethod
    def of(cls, o: RunOptions) -> RunPlan:
        """The plan the run options ask for, with the device's defaults where they leave a value open."""
        device = resolve_device(o.device)
        on_cpu = device.type == "cpu"
        return cls(
            checkpoint=checkpoints.resolve(o.checkpoint),
            device=device,
            n_tokens=o.tokens or default_tokens(device.type),
            rounds=o.rounds if o.rounds is not None else (5 if on_cpu else 10),
            warmup=o.warmup if o.warmup is not None else (1 if on_cpu else 2),  # the least; see warm_up
            threads=o.threads,
        )

    def workload(self, batch_size: int) -> Workload:
        return Workload(n_tokens=self.n_tokens, batch_size=batch_size)


@dataclass(frozen=True)
class Case:
    """One benchmark to run: a configuration at a batch size."""

    config: OptimizationConfig
    batch_size: int

    @property
    def id(self) -> str:
        return benchmark_id(self.config.name, self.batch_size)

    def __str__(self) -> str:
        return self.id


def cases(selected: list[OptimizationConfig], batch_sizes: list[int]) -> list[Case]:
    return [Case(c, bs) for c in selected for bs in batch_sizes]


def parse_shard(spec: str) -> tuple[int, int]:
    """`K/N`, 1-based, as GitHub Actions' matrix gives it."""
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise ValueError(f"--bark-shard {spec!r} must look like K/N, e.g. 2/4") from None
    if not 1 <= k <= n:
        raise ValueError(f"--bark-shard {spec!r}: K must be between 1 and N")
    return k, n


def shard(all_cases: list[Case], k: int, n: int) -> list[Case]:
    """Whole configurations go round-robin to shards, so each model is still loaded once per shard."""
    names = list(dict.fromkeys(c.config.name for c in all_cases))
    mine = {name for i, name in enumerate(names) if i % n == k - 1}
    return [c for c in all_cases if c.config.name in mine]


def order(selected: list[Case]) -> list[Case]:
    """The loop's order of benchmarks: configuration by configuration, in the order they were first named."""
    names = list(dict.fromkeys(c.config.name for c in selected))
    return sorted(selected, key=lambda c: names.index(c.config.name))


def new_record(plan: RunPlan, host_allocator: str | None, stack: Stack | None = None) -> RunRecord:
    stack = stack or current_stack()
    ck = plan.checkpoint
    return RunRecord(
        hardware=hardware_key(stack, plan.device.type),
        device=str(plan.device),
        checkpoint={"key": ck.key, "kind": ck.kind, "revision": ck.revision},
        workload={
            **plan.workload(1).identity(),
            # The thread count changes what a CPU timing means: part of what must match to compare.
            "threads": torch.get_num_threads(),
            # How host memory was allocated changes the host peak: part of what must match too.
            "host_allocator": host_allocator,
        },
        environment={"suite": perf_utils.__version__, **stack.to_dict()},
        suite_version=perf_utils.__version__,
    )


@dataclass
class Run:
    """One run: the plan, the model currently loaded, the fidelity reference, and every result so far."""

    plan: RunPlan
    progress: Progress | None = None
    check_fidelity: bool = True
    planned: list[Case] = field(default_factory=list)  # the run's benchmarks, for position and time left
    record: RunRecord = field(init=False)
    _loaded: LoadedBark | None = field(default=None, init=False)
    _load_error: tuple[OptimizationConfig, BaseException] | None = field(default=None, init=False)
    _reference: dict[str, Any] | BaseException | None = field(default=None, init=False)
    _fidelity: dict[OptimizationConfig, Fidelity] = field(default_factory=dict, init=False)
    _durations: list[float] = field(default_factory=list, init=False)  # seconds per finished benchmark

    def __post_init__(self) -> None:
        loading.quiet_transformers()
        self.record = new_record(self.plan, self.plan.apply())

    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def unavailable_reason(self, config: OptimizationConfig) -> str | None:
        return configs.unavailable_reason(config, current_stack(), self.plan.device.type)

    def measure_all(self, selected: list[Case]) -> RunRecord:
        """Every case, in the loop's order; the model of the last configuration is freed at the end."""
        self.planned = order(selected)
        try:
            for case in self.planned:
                self.measure(case)
        finally:
            self.release()
        return self.record

    def measure(self, case: Case, timed: Timed = plain_rounds) -> BenchmarkResult:
        """Measure one case through `timed(fn, rounds, warmup)`. Never raises for the case itself: the result says
        `unavailable` (with the exact reason) or `failed` (with the exception in `result.error`)."""
        config = case.config
        if reason := self.unavailable_reason(config):
            return self.record.put(
                BenchmarkResult(config.name, case.batch_size, UNAVAILABLE, reason, changes=config.changes())
            )
        try:
            self._ensure_reference()
            loaded = self._model_for(config)
            measurer = Measurer(loaded, self.plan.workload(case.batch_size))
            rounds: list[dict[str, float]] = []
            started = time.perf_counter()
            warmups = 0

            def warm_call() -> float:
                nonlocal warmups
                warmups += 1
                self._say(f"{self._position(case)}{case.id}: warm-up {warmups} (until steady, at most {WARMUP_CAP})")
                return measurer.call()["latency_s"]

            def one_call() -> None:
                calls = warmups + len(rounds)  # warm-ups included; none yet on a cold measurement
                per_call = (time.perf_counter() - started) / calls if calls else None
                self._say(self._where(case, len(rounds), per_call))
                rounds.append(measurer.call())

            warm_up(warm_call, self.plan.warmup)
            timed(one_call, self.plan.rounds, 0)
            self._durations.append(time.perf_counter() - started)
            fid = self._fidelity_of(config, loaded) if self.check_fidelity else None
        except Exception as exc:  # noqa: BLE001 - a benchmark that fails is a result, not a crash of the run
            self.release()
            failed = BenchmarkResult(
                config.name,
                case.batch_size,
                FAILED,
                f"{type(exc).__name__}: {exc}",
                changes=config.changes(),
                error=exc,
            )
            return self.record.put(failed)
        result = BenchmarkResult(
            config.name,
            case.batch_size,
            OK,
            rounds=rounds,  # pytest-benchmark calls once when disabled (--benchmark-disable, xdist)
            warmup=warmups,
            counts=measurer.last_counts.to_dict() if measurer.last_counts else None,
            load_s=loaded.load_s,
            changes=config.changes(),
            fidelity=fid,
        )
        return self.record.put(result)

    def _model_for(self, config: OptimizationConfig) -> LoadedBark:
        if self._loaded is not None and self._loaded.config == config:
            return self._loaded
        if self._load_error is not None and self._load_error[0] == config:  # one failed load per configuration
            raise self._load_error[1]
        self.release()
        self._say(f"loading {config.name} ({self.plan.checkpoint.key})")
        try:
            self._loaded = loading.load(self.plan.checkpoint, config, self.plan.device)
        except Exception as exc:
            self._load_error = (config, exc)
            raise
        return self._loaded

    def _ensure_reference(self) -> None:
        """The fp32 eager outputs, computed once, before any configuration's model is loaded."""
        if self._reference is None and self.check_fidelity:
            self.release()
            self._say("computing the fp32 eager reference for the fidelity check")
            ref = loading.load(self.plan.checkpoint, REFERENCE, self.plan.device)
            try:
                self._reference = fidelity.outputs(ref.model)
            except Exception as exc:  # noqa: BLE001 - no reference: every configuration is "not checked"
                self._reference = exc
            finally:
                loading.unload(ref)

    def _fidelity_of(self, config: OptimizationConfig, loaded: LoadedBark) -> Fidelity:
        """Once per configuration, against the fp32 eager reference."""
        if config not in self._fidelity:
            if isinstance(self._reference, BaseException):
                self._fidelity[config] = Fidelity.not_checked(config.precision, self._reference)
            else:
                assert self._reference is not None
                self._fidelity[config] = fidelity.check(loaded.model, self._reference, config.precision)
        return self._fidelity[config]

    def release(self) -> None:
        if self._loaded is not None:
            loading.unload(self._loaded)
            self._loaded = None

    def _position(self, case: Case) -> str:
        ids = [c.id for c in self.planned]
        return f"[{ids.index(case.id) + 1}/{len(ids)}] " if case.id in ids else ""

    def _where(self, case: Case, done: int, per_call: float | None) -> str:
        """Progress: which benchmark of how many, which round, and the time left (from the calls and benchmarks
        measured so far; unavailable benchmarks cost nothing)."""
        here = per_call * (self.plan.rounds - done) if per_call is not None else None
        text = f"{self._position(case)}{case.id}: round {done + 1}/{self.plan.rounds}"
        text += f", ~{_duration(here)} left in it" if here is not None else ""
        ids = [c.id for c in self.planned]
        if case.id in ids and self._durations:
            after = self.planned[ids.index(case.id) + 1 :]
            todo = sum(self.unavailable_reason(c.config) is None for c in after)
            per = sum(self._durations) / len(self._durations)
            text += f", ~{_duration(todo * per + (here or per))} left in the run"
        return text


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.0f}min"
