"""The one run loop: every entry point (pytest, `python -m perf_utils run`, gate-quality) measures through `Run`.

A run is a plan (checkpoint, device, workload, rounds, invocations) and a list of cases (configuration x batch
size). Where the noise lives decides the schedule:
- **Invocations.** Rounds of one process share its state (memory layout, clocks, the load on the machine in those
  seconds); here the medians of separate processes spread several times wider than the rounds of one. So a run
  measures each case in `invocations` separate worker processes (`measure.worker`), one after the other, each with
  its own load and warm-up, and the gate's interval is built from invocations first (`gate.bootstrap`). One
  invocation runs in this process.
- **Interleaved rounds.** Within an invocation every configuration's model is loaded at once (when the models fit
  the device with room to spare; otherwise configuration by configuration, in a random order, and the record says
  why), and the rounds run as randomized interleaved trials (Abedi and Brecht): each trial measures every case
  once, in a fresh random order. What drifts over minutes then hits every configuration alike, and the ratios to
  fp32 of the same trial (`record.ratios`) are drift-free.
- **Warm-up to a steady state** per case and invocation (`warm_up`), counted.
- **Host allocations counted apart.** After its trials, each case makes one untimed call under memray
  (`trackers.allocations`): the host memory the gate judges, which a timed round cannot carry (memray slows a call).
- **Trials paced from outside.** `Run.serve` is the same invocation with each trial asked for on stdin, so that
  `compare-stacks` can alternate two stacks' workers trial by trial (`measure.alternate`).
The loop checks availability, loads, measures, checks fidelity against the fp32 eager reference (first
invocation), and builds the record. It never raises for a benchmark: the result says `unavailable` or `failed`.
Interrupted (Ctrl-C, or the SIGINT of a time limit: `tools.gpu_check`), it keeps what it measured before it
re-raises, and the record says where it stopped (`RunRecord.interrupted`): nothing measured is lost.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

import perf_utils
from perf_utils.bark import checkpoints, configs, loading
from perf_utils.bark import device as dev
from perf_utils.bark.checkpoints import Checkpoint
from perf_utils.bark.configs import OptimizationConfig
from perf_utils.bark.device import resolve_device
from perf_utils.bark.environment import Stack, current_stack, hardware_key
from perf_utils.bark.loading import LoadedBark
from perf_utils.bark.workload import Workload, default_tokens
from perf_utils.measure import fidelity
from perf_utils.measure.measurer import Measurer
from perf_utils.measure.probe import host_probe
from perf_utils.measure.settings import onednn_cache, size_onednn_cache
from perf_utils.measure.trackers import allocations
from perf_utils.measure.trackers.memory import pin_host_allocator
from perf_utils.options import RunOptions
from perf_utils.record.fidelity import Fidelity
from perf_utils.record.golden import Fingerprint
from perf_utils.record.metrics import HOST_PROBE, INVOCATION_PROBE, MB
from perf_utils.record.ratios import add_ratios
from perf_utils.record.record import (
    FAILED,
    IN_PROCESS,
    OK,
    REFERENCE_CONFIG,
    UNAVAILABLE,
    BenchmarkResult,
    Remeasured,
    RunRecord,
    Schedule,
    Shard,
    benchmark_id,
)
from perf_utils.record.store import ONEDNN_CACHE_KEY

Progress = Callable[[str], None]
WARMUP_CAP = 10  # at most this many warm-up calls, however long the rounds keep improving
WARMUP_TOLERANCE = 0.02  # a call more than this much faster than every earlier one: still warming up
# Models are loaded together for interleaving only when this many times their weights fit in free memory
# (activations, the allocator's cache, the fidelity reference).
ROOM_FACTOR = 2.0

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


@dataclass(frozen=True)
class RunPlan:
    checkpoint: Checkpoint
    device: torch.device
    n_tokens: int
    rounds: int  # per invocation
    warmup: int  # the least number of warm-up calls: they go on until the rounds stop improving (warm_up)
    threads: int | None = None  # CPU intra-op threads; None keeps torch's default
    invocations: int = 1  # separate processes per run; 1 measures in this process
    seed: int = 0  # of the interleaved order (invocation i shuffles with seed + i)
    shard: str | None = None  # "K/N" of a sharded run: recorded in its schedule, for merging its shards

    def apply(self) -> str | None:
        """Process-wide settings of the plan. One thread makes a CPU tier robust to a busy machine: two threads
        fighting another process for two cores made a tiny call ~20x slower here. The host allocator is pinned
        so RSS rises repeat (trackers.memory.pin_host_allocator); returns that setting. oneDNN keeps every
        interleaved case's kernels (`measure.settings`; recorded by `new_record`)."""
        if self.threads:
            torch.set_num_threads(self.threads)
        size_onednn_cache()
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
            rounds=o.rounds if o.rounds is not None else DEFAULT_ROUNDS["cpu" if on_cpu else "accelerator"],
            warmup=o.warmup if o.warmup is not None else (1 if on_cpu else 2),  # the least; see warm_up
            threads=o.threads,
            invocations=o.invocations if o.invocations is not None else default_invocations(o.saving_baseline),
            shard=str(o.shard) if o.shard else None,
        )

    def workload(self, batch_size: int) -> Workload:
        return Workload(n_tokens=self.n_tokens, batch_size=batch_size)

    def describe(self) -> str:
        """The schedule in words, for the line above a result table."""
        where = "in this process" if self.invocations == 1 else f"in each of {self.invocations} worker processes"
        return (
            f"warm-up until steady (at least {self.warmup}), then {self.rounds} interleaved rounds per benchmark "
            f"{where}"
        )


# Why: docs/gate-quality.md, "Where the noise lives". Separate processes spread more than the rounds within one, so
# invocations buy more certainty than rounds; a CPU round of the tier costs ~8 s and an invocation ~35 s (start, load,
# warm-up).
DEFAULT_INVOCATIONS = 3
# A stored baseline's level is shared by every run judged against it for weeks: a baseline of 3 invocations that
# happened to run 4% fast moved every comparison by 4%. Ten pin it, and narrow the interval on its side (README,
# "A steady CPU lane"); the cost is paid once.
BASELINE_INVOCATIONS = 10
DEFAULT_ROUNDS = {"cpu": 2, "accelerator": 4}  # per invocation


def default_invocations(saving_baseline: bool, otherwise: int = DEFAULT_INVOCATIONS) -> int:
    """Invocations when --bark-invocations leaves them open: a baseline's, or `otherwise` (a run's; compare-stacks
    passes its own)."""
    return BASELINE_INVOCATIONS if saving_baseline else otherwise


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


def shard(all_cases: list[Case], part: Shard) -> list[Case]:
    """Whole configurations go round-robin to shards, so each model is still loaded once per shard. fp32, when
    selected, runs in every shard: each configuration's ratios to fp32 come from the trials of its own run
    (`record.ratios`); merging keeps the first shard's fp32 (`store.merge_shards`)."""
    names = [name for name in dict.fromkeys(c.config.name for c in all_cases) if name != REFERENCE_CONFIG]
    mine = {name for i, name in enumerate(names) if i % part.n == part.k - 1} | {REFERENCE_CONFIG}
    return [c for c in all_cases if c.config.name in mine]


def select_cases(o: RunOptions) -> list[Case]:
    """The benchmarks the run options select, in the run loop's order: the configurations named (by default all
    but the test-only ones) at each batch size, and of those the shard's part. One definition for pytest and
    `python -m perf_utils run`, so a shard is the same part whichever runs it. An unknown name: ValueError."""
    try:
        selected = configs.select(o.configs)
    except KeyError as exc:
        raise ValueError(f"--bark-configs: {exc.args[0]}") from None
    chosen = cases(selected, o.batch_sizes)
    return order(shard(chosen, o.shard) if o.shard else chosen)


def order(selected: list[Case]) -> list[Case]:
    """The order benchmarks are listed and reported in: configuration by configuration, as first named."""
    names = list(dict.fromkeys(c.config.name for c in selected))
    return sorted(selected, key=lambda c: names.index(c.config.name))


def trials(selected: list[Case], rounds: int, rng: random.Random) -> list[Case]:
    """Randomized multiple interleaved trials (Abedi and Brecht): `rounds` trials, each measuring every case once
    in a fresh random order, so slow drift and periodic noise fall on every case alike."""
    out: list[Case] = []
    for _ in range(rounds):
        trial = list(selected)
        rng.shuffle(trial)
        out += trial
    return out


def weights_bytes(checkpoint: Checkpoint) -> int:
    """The checkpoint's weights on disk: an upper bound of what one loaded configuration holds (fp32)."""
    return sum(f.stat().st_size for pattern in ("*.safetensors", "*.bin") for f in checkpoint.path.glob(pattern))


def together_or_why(plan: RunPlan, n_models: int) -> str | None:
    """None when `n_models` models of the checkpoint fit the device at once with room to spare; else why not."""
    if n_models <= 1:
        return None
    need = ROOM_FACTOR * n_models * weights_bytes(plan.checkpoint)
    free = dev.free_memory(plan.device)
    if free is None or need <= free:
        return None
    return (
        f"{n_models} models of {plan.checkpoint.key} need ~{need / MB:,.0f} MB with room to spare, "
        f"{free / MB:,.0f} MB free on {plan.device}: configuration by configuration, in a random order"
    )


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
            # How host memory was allocated changes the RSS rise: part of what must match too.
            "host_allocator": host_allocator,
        },
        environment={"suite": perf_utils.__version__, **stack.to_dict(), ONEDNN_CACHE_KEY: onednn_cache()},
        suite_version=perf_utils.__version__,
    )


@dataclass
class Invocation:
    """What one invocation measured: a result per case, and how its rounds were scheduled."""

    results: list[BenchmarkResult]
    interleaved: bool
    note: str | None = None  # why not interleaved
    tracebacks: dict[str, str] = field(default_factory=dict)  # of failed benchmarks, by id
    reference: Fingerprint | None = None  # of the fp32 eager reference, when this invocation computed it
    header: dict[str, Any] | None = None  # the record's header as the measuring process saw it (HEADER)
    started: str = IN_PROCESS  # how its process began: IN_PROCESS, FRESH or FORKED (`measure.forks`)

    def ids(self) -> set[str]:
        return {r.id for r in self.results}


class Interrupted(KeyboardInterrupt):
    """Ctrl-C inside an invocation measured in this process, carrying what it measured before (`Run.invocation`)."""

    def __init__(self, part: Invocation) -> None:
        super().__init__()
        self.part = part


# What a record says about where it was measured: taken from the process that measured (another stack's venv).
HEADER = ("hardware", "device", "checkpoint", "workload", "environment")


@dataclass
class Run:
    """One run: the plan, the models loaded, the fidelity reference, and the record of every result so far."""

    plan: RunPlan
    progress: Progress | None = None
    check_fidelity: bool = True
    planned: list[Case] = field(default_factory=list)  # the run's benchmarks (pytest fills this at collection)
    record: RunRecord = field(init=False)
    # Ctrl-C reached the run loop: known here whatever the caller's own handling makes of it (pytest 9.2 turned an
    # interrupt during an import into an internal error, and the plugin then kept a run that measured nothing)
    stopped: bool = field(default=False, init=False)
    _loaded: dict[OptimizationConfig, LoadedBark] = field(default_factory=dict, init=False)
    _reference: dict[str, Any] | BaseException | None = field(default=None, init=False)
    _clock: _Clock = field(init=False)

    def __post_init__(self) -> None:
        loading.quiet_transformers()
        self.record = new_record(self.plan, self.plan.apply())

    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def unavailable_reason(self, config: OptimizationConfig) -> str | None:
        return configs.unavailable_reason(config, current_stack(), self.plan.device.type)

    def _available(self, selected: list[Case]) -> tuple[list[Case], list[BenchmarkResult]]:
        """The cases that can run here, and an `unavailable` result saying why for each of the others."""
        runnable, unavailable = [], []
        for case in selected:
            if reason := self.unavailable_reason(case.config):
                unavailable.append(BenchmarkResult(case.config.name, case.batch_size, UNAVAILABLE, reason,
                                                   changes=case.config.changes()))  # fmt: skip
            else:
                runnable.append(case)
        return runnable, unavailable

    def result(self, case: Case) -> BenchmarkResult:
        """`case`'s result, measuring the whole planned run the first time one is asked for (the rounds of all
        cases are interleaved, so they are measured together)."""
        if case.id not in self.record.by_id():
            self.measure_all(self.planned if case in self.planned else [case])
        return self.record.by_id()[case.id]

    def measure_all(self, selected: list[Case]) -> RunRecord:
        """Every case: the unavailable ones say why; the rest in `plan.invocations` invocations."""
        self.planned = order(selected)
        runnable, unavailable = self._available(self.planned)
        for result in unavailable:
            self.record.put(result)
        if not runnable:
            return self.record
        n = self.plan.invocations
        parts, started = [], time.perf_counter()
        try:
            for i in range(n):
                after = f" (~{duration((time.perf_counter() - started) / i * (n - i))} left in the run)" if i else ""
                parts.append(self._invoke(runnable, i, f"{i + 1}/{n}{after}"))
        except KeyboardInterrupt as stop:
            self.stopped = True
            self._keep_interrupted(runnable, parts, stop)
            if isinstance(stop, Interrupted) and isinstance(stop.__cause__, KeyboardInterrupt):
                raise stop.__cause__ from None  # the caller sees the interrupt itself (pytest: "KeyboardInterrupt")
            raise
        self.record_invocations(runnable, parts)
        return self.record

    def _keep_interrupted(self, runnable: list[Case], parts: list[Invocation], stop: KeyboardInterrupt) -> None:
        """Ctrl-C (or a time limit's SIGINT) in the middle of a run: the record keeps every whole invocation and
        the rounds the cut one took so far (a worker process writes them back when it can: `Worker.cut_short`);
        `interrupted` says where it stopped, and the end-of-run path judges it as such and never adopts it."""
        n, cut = self.plan.invocations, len(parts) + 1
        if isinstance(stop, Interrupted):
            parts += [stop.part] if stop.part.results else []  # rounds, or a failure before the interrupt
            took = any(r.ran for r in stop.part.results)
            kept = "its rounds so far are kept" if took else "it had measured no round yet"
        else:
            kept = "what its worker process measured is lost"  # it wrote nothing back in time
        if not any(r.ran for p in parts for r in p.results):
            return  # nothing measured: nothing to keep
        self.record_invocations([c for c in runnable if any(c.id in p.ids() for p in parts)], parts)
        self.record.mark_interrupted(f"interrupted in invocation {cut} of {n}: {kept}")

    def _invoke(self, runnable: list[Case], index: int, label: str) -> Invocation:
        """Invocation `index`: in this process when the plan has one, else in a worker process of its own."""
        if self.plan.invocations == 1:
            return self.invocation(runnable, index)
        from perf_utils.measure import worker

        def relay(line: str) -> None:
            self._say(f"invocation {label}: {line}")

        return worker.invoke(self.plan, runnable, index, self.check_fidelity, relay)

    def measure_more(self, ids: list[str]) -> RunRecord:
        """One more invocation of the whole run, appended to every result that ran, because the gate called
        `ids` noisy. The whole run, not only `ids`: a process that measures some benchmarks has another allocator
        history than one that measures all, and the RSS rise of a small call depends on it (re-measuring only
        the noisy batch-1 benchmarks moved their RSS rises by +29..+41% here). A benchmark that fails in it
        fails."""
        assert self.record.schedule is not None, "measure_more comes after measure_all"
        runnable = [c for c in self.planned if (r := self.record.by_id().get(c.id)) is not None and r.ran]
        if not runnable:
            return self.record
        index = 1 + max((i for r in self.record.measured() for i in r.invocations or [0]), default=0)
        part = self._invoke(runnable, index, f"{index + 1} (more, for the noisy {', '.join(ids)})")
        by_id = self.record.by_id()
        for result in part.results:
            self.record.put(by_id[result.id].appended(result, index))
        extra = self.record.schedule.remeasured = self.record.schedule.remeasured or Remeasured()
        extra.invocations += 1
        extra.noisy = list(dict.fromkeys([*extra.noisy, *ids]))
        add_ratios(self.record)
        return self.record

    def record_invocations(self, runnable: list[Case], parts: list[Invocation]) -> None:
        header = next((p.header for p in parts if p.header), None)
        for key, value in (header or {}).items():  # the measuring process's stack, not this one's
            setattr(self.record, key, value)
        by_id = [{r.id: r for r in p.results} for p in parts]
        for case in runnable:
            # every part has every case, but an interrupted run's last part may lack those it never reached
            result = BenchmarkResult.of_invocations([p[case.id] for p in by_id if case.id in p])
            if result.status == FAILED and result.error is None:
                trace = next((p.tracebacks[case.id] for p in parts if case.id in p.tracebacks), result.reason)
                result.error = InvocationError(f"{case.id}: {result.reason}\n{trace}")
            self.record.put(result)
        notes = sorted({p.note for p in parts if p.note})
        self.record.reference = next((p.reference for p in parts if p.reference is not None), None)
        self.record.schedule = Schedule(
            invocations=len(parts),
            rounds=self.plan.rounds,
            interleaved=all(p.interleaved for p in parts),
            seed=self.plan.seed,
            workers="; ".join(sorted({p.started for p in parts})),
            note="; ".join(notes) or None,
            shard=self.plan.shard,
        )
        add_ratios(self.record)

    def invocation(self, selected: list[Case], index: int) -> Invocation:
        """One invocation in this process: load, warm up each case, then the interleaved trials; fidelity (in
        the first invocation) once per configuration. Everything it loaded is freed before it returns."""
        rng, groups, out = self._begin(selected, index)
        batch: _Group | None = None
        try:
            for group in groups:
                batch = _Group(self, [c for c in selected if c.config in group], rng)
                batch.prepare()
                for _ in range(self.plan.rounds):
                    batch.trial()
                batch.finish(self._fidelity_now(index), out)
                batch = None
        except KeyboardInterrupt as stop:
            if batch is not None:
                batch.finish(False, out, interrupted=True)
            raise Interrupted(out) from stop
        finally:
            self.release()
        return out

    def serve(self, selected: list[Case], index: int, commands: Iterator[str], ready: Callable[[], None]) -> Invocation:
        """One invocation whose trials someone else paces (`compare-stacks` alternates two stacks' workers): load
        and warm up every case, call `ready`, then one trial per `TRIAL` command, `ready` after each; any other
        command (or the end) finishes it. Unavailable cases say why; every model must be resident at once.
        Interrupted, it raises `Interrupted` with the trials so far, as `invocation` does."""
        runnable, unavailable = self._available(selected)
        rng, groups, out = self._begin(runnable, index)
        # its progress covers the warm-up only: the trials are paced, and said, by the caller (`measure.alternate`)
        self._clock = _Clock(len(runnable) * self._least_warmup(), "its warm-up")
        out.results += unavailable
        if len(groups) > 1:
            raise MemoryError(f"alternating trials need every model resident at once: {out.note}")
        batch = _Group(self, runnable, rng)
        try:
            batch.prepare()
            ready()
            for command in commands:
                if command.strip() != TRIAL:
                    break
                batch.trial()
                ready()
            batch.finish(self._fidelity_now(index), out)
        except KeyboardInterrupt as stop:
            batch.finish(False, out, interrupted=True)
            raise Interrupted(out) from stop
        finally:
            self.release()
        return out

    def _least_warmup(self) -> int:
        """Warm-up calls per case at the least (more follow until a call is steady: `warm_up`)."""
        return max(self.plan.warmup, 2)

    def _fidelity_now(self, index: int) -> bool:
        return self.check_fidelity and index == 0

    def _begin(
        self, selected: list[Case], index: int
    ) -> tuple[random.Random, list[list[OptimizationConfig]], Invocation]:
        """The invocation's random order, its groups of configurations loaded together, and the reference."""
        rng = random.Random(self.plan.seed + index)
        names = list(dict.fromkeys(c.config for c in selected))
        why_not = together_or_why(self.plan, len(names))
        groups = [names] if why_not is None else [[c] for c in rng.sample(names, len(names))]
        out = Invocation([], interleaved=why_not is None, note=why_not)
        counted = allocations.unavailable_reason(self.plan.device.type) is None  # one more call each: `_allocations`
        expected_calls = len(selected) * (self._least_warmup() + self.plan.rounds + counted)
        self._clock = _Clock(expected_calls, "the run" if self.plan.invocations == 1 else "this invocation")
        if self._fidelity_now(index):
            self._ensure_reference()
            if isinstance(self._reference, dict):
                out.reference = fidelity.fingerprint(self._reference)
        return rng, groups, out

    def _load(self, config: OptimizationConfig) -> LoadedBark:
        self._say(f"loading {config.name} ({self.plan.checkpoint.key})")
        self._loaded[config] = loading.load(self.plan.checkpoint, config, self.plan.device)
        return self._loaded[config]

    def _measurer(self, case: Case) -> Measurer:
        loaded = self._loaded[case.config]
        others = sum(m.resident_bytes or 0 for c, m in self._loaded.items() if c != case.config)
        return Measurer(loaded, self.plan.workload(case.batch_size), others_bytes=others)

    def _warm(self, case: Case, measurer: Measurer) -> int:
        """Warm `case` up to a steady state (`warm_up`), said in a line as it starts and a line per call past the
        least, which says why it goes on (compare-stacks relayed a line per warm-up call), each such call added to
        the time left (it stayed at "~0s left" through them)."""
        calls, least = 0, self._least_warmup()

        def call() -> float:
            nonlocal calls
            calls += 1
            if calls == 1:
                self._clock.say(self, f"{case.id}: warm-up (until steady: {least} to {WARMUP_CAP} calls)")
            elif calls > least:
                self._clock.expected += 1
                self._clock.say(self, f"{case.id}: warm-up call {calls} of at most {WARMUP_CAP} (still getting faster)")
            latency = measurer.call()["latency_s"]
            self._clock.tick()
            return latency

        return warm_up(call, self.plan.warmup)

    def _allocations(self, case: Case, measurer: Measurer) -> dict[str, float]:
        """The host allocations' peak of one untimed call (`Measurer.allocation_peak`), said as it starts."""
        if allocations.unavailable_reason(self.plan.device.type):
            return {}
        self._clock.say(self, f"{case.id}: host allocations (one untimed call under memray)")
        figure = measurer.allocation_peak()
        self._clock.tick()
        return figure

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
        """Against the fp32 eager reference."""
        precision = fidelity.judged_precision(config.precision, loaded.device)
        if isinstance(self._reference, BaseException):
            return Fidelity.not_checked(precision, self._reference)
        assert self._reference is not None
        return fidelity.check(loaded.model, self._reference, precision)

    def release(self) -> None:
        """Free every loaded model (collected, accelerator cache emptied, peaks reset)."""
        while self._loaded:
            _, loaded = self._loaded.popitem()
            loading.unload(loaded)


TRIAL = "trial"  # the command that asks a serving worker for one more trial (Run.serve)


@dataclass
class _Group:
    """Configurations loaded together in one invocation, and what they measured so far: load and warm up
    (`prepare`), one randomized pass over every case per `trial`, then fidelity and the results (`finish`)."""

    run: Run
    cases: list[Case]
    rng: random.Random
    failed: dict[str, BaseException] = field(default_factory=dict)
    measurers: dict[str, Measurer] = field(default_factory=dict)
    rounds: dict[str, list[dict[str, float]]] = field(init=False)  # by case id, filled by trials
    warmups: dict[str, int] = field(default_factory=dict)
    # by case id: its host allocations' peak, from the untimed call after its trials (`_count_allocations`)
    allocations: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.rounds = {c.id: [] for c in self.cases}

    def prepare(self) -> None:
        run = self.run
        for config in dict.fromkeys(c.config for c in self.cases):
            try:
                run._load(config)
            except Exception as exc:  # noqa: BLE001 - a configuration that cannot load is a failed result
                self.failed.update({c.id: exc for c in self.cases if c.config == config})
        for case in self.cases:
            if case.id in self.failed:
                continue
            try:
                self.measurers[case.id] = run._measurer(case)
                self.warmups[case.id] = run._warm(case, self.measurers[case.id])
            except Exception as exc:  # noqa: BLE001
                self.failed[case.id] = exc

    def trial(self) -> None:
        """Every case once, in a fresh random order (`trials`)."""
        for case in trials(self.cases, 1, self.rng):
            if case.id in self.failed:
                continue
            self.run._clock.say(self.run, f"{case.id}: round {len(self.rounds[case.id]) + 1}/{self.run.plan.rounds}")
            try:
                measured = self.measurers[case.id].call()
                measured[HOST_PROBE] = host_probe()  # the host's speed at this round (`measure.probe`)
                self.rounds[case.id].append(measured)
            except Exception as exc:  # noqa: BLE001
                self.failed[case.id] = exc
            self.run._clock.tick()

    def finish(self, with_fidelity: bool, out: Invocation, interrupted: bool = False) -> None:
        """The group's results into `out`. `interrupted`: cut short, so only the cases that took a round (or
        failed) have a result, and those not already in `out` (it may have been cut inside this very call)."""
        run = self.run
        self._mark_host_speed()
        if not interrupted:
            self._count_allocations()
        fid = {}
        for config, loaded in run._loaded.items():
            if with_fidelity and any(c.config == config and c.id not in self.failed for c in self.cases):
                fid[config] = run._fidelity_of(config, loaded)
        done = out.ids()
        for case in self.cases:
            if interrupted and (case.id in done or not (self.rounds[case.id] or case.id in self.failed)):
                continue
            config, loaded = case.config, run._loaded.get(case.config)
            if case.id in self.failed:
                exc = self.failed[case.id]
                reason = f"{type(exc).__name__}: {exc}"
                if loaded is not None and "device" in str(exc):  # say which module sat on which device
                    reason += f" [weights: {loading.where_weights_sit(loaded.model)}]"
                out.results.append(BenchmarkResult(config.name, case.batch_size, FAILED, reason,
                                                   changes=config.changes(), error=exc))  # fmt: skip
                out.tracebacks[case.id] = _traceback(exc)
                continue
            assert loaded is not None
            if self.rounds[case.id]:  # the invocation's figure rides on its first round (`metrics.HOST_ALLOC_PEAK`)
                self.rounds[case.id][0].update(self.allocations.get(case.id, {}))
            counts = self.measurers[case.id].last_counts
            out.results.append(
                BenchmarkResult(
                    config.name,
                    case.batch_size,
                    OK,
                    rounds=self.rounds[case.id],
                    warmup=self.warmups[case.id],
                    counts=counts.to_dict() if counts else None,
                    load_s=loaded.load_s,
                    changes=config.changes(),
                    fidelity=fid.get(config),
                )
            )
        run.release()

    def _count_allocations(self) -> None:
        """Each case's host allocations in one untimed call after its trials (`Run._allocations`): after, so that
        neither a cold measurement (`--bark-warmup 0`) nor a round's timing sees memray's call. A failure of that
        call is said and leaves the count out (that benchmark's host memory is then not judged); the rounds stand."""
        for case in self.cases:
            if case.id in self.failed or not self.rounds[case.id]:
                continue
            try:
                self.allocations[case.id] = self.run._allocations(case, self.measurers[case.id])
            except Exception as exc:  # noqa: BLE001 - memray's, after the call ran in every round: the rounds stand
                self.run._say(f"{case.id}: host allocations not counted ({type(exc).__name__}: {exc})")

    def _mark_host_speed(self) -> None:
        """Every round gets the median probe of all rounds interleaved with it (`INVOCATION_PROBE`): the host's
        speed in this process, read from every benchmark's probes instead of each one's own few."""
        probes = [r[HOST_PROBE] for rounds in self.rounds.values() for r in rounds if HOST_PROBE in r]
        if not probes:
            return
        speed = statistics.median(probes)
        for rounds in self.rounds.values():
            for r in rounds:
                r[INVOCATION_PROBE] = speed


class InvocationError(RuntimeError):
    """A benchmark failed in an invocation (perhaps another process): its reason and traceback."""


def _traceback(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))[-4000:]


class _Clock:
    """Progress within one invocation: which benchmark and round, and the time left from the calls so far."""

    def __init__(self, expected_calls: int, scope: str) -> None:
        self.started = time.perf_counter()
        self.calls, self.expected, self.scope = 0, expected_calls, scope

    def tick(self) -> None:
        self.calls += 1

    def say(self, run: Run, what: str) -> None:
        if self.calls:
            per = (time.perf_counter() - self.started) / self.calls
            what += f", ~{duration(per * max(self.expected - self.calls, 0))} left in {self.scope}"
        run._say(what)


def duration(seconds: float) -> str:
    """A time left, as progress lines say it."""
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.0f}min"
