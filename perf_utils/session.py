"""State of one benchmark session: the plan, the model currently loaded, and every result so far.

Benchmarks are ordered configuration by configuration, so each model is loaded once for all its batch sizes
and freed (collected, accelerator cache emptied, peaks reset) before the next configuration loads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perf_utils import configs, fidelity, history, loading
from perf_utils.configs import OptimizationConfig
from perf_utils.loading import LoadedBark
from perf_utils.measure import Measurer
from perf_utils.record import ConfigResult, RunRecord, benchmark_id
from perf_utils.runner import RunPlan, new_record
from perf_utils.stack import current_stack

# What every configuration's fidelity is measured against: never the registry's `baseline`, which a test may
# have replaced with a faulty copy.
REFERENCE = OptimizationConfig("reference", "fp32, eager attention, unpatched: the fidelity reference")


class Unavailable(Exception):
    """The configuration cannot run here; the message is the exact reason."""


@dataclass(frozen=True)
class Case:
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


@dataclass
class BenchSession:
    plan: RunPlan
    record: RunRecord = field(init=False)
    progress: Callable[[str], None] | None = None
    check_fidelity: bool = True
    planned: list[Case] = field(default_factory=list)  # the run's benchmarks, for position and time left
    _loaded: LoadedBark | None = field(default=None, init=False)
    _reference: dict[str, Any] | Exception | None = field(default=None, init=False)
    _fidelity: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    _durations: list[float] = field(default_factory=list, init=False)  # seconds per finished benchmark

    def __post_init__(self) -> None:
        loading.quiet_transformers()
        self.plan.apply()
        self.record = new_record(self.plan)

    def _add(self, result: ConfigResult) -> ConfigResult:
        self.record.results = [r for r in self.record.results if r.id != result.id] + [result]
        return result

    def _model_for(self, config: OptimizationConfig) -> LoadedBark:
        if self._loaded is not None and self._loaded.config.name == config.name:
            return self._loaded
        self.release()
        if self.progress:
            self.progress(f"loading {config.name} ({self.plan.checkpoint.key})")
        self._loaded = loading.load(self.plan.checkpoint, config, self.plan.device)
        return self._loaded

    def _fidelity_of(self, config: OptimizationConfig, loaded: LoadedBark) -> dict[str, Any]:
        """Once per configuration, against the fp32 eager reference (computed once, before this model loads)."""
        if config.name not in self._fidelity:
            if isinstance(self._reference, BaseException):
                self._fidelity[config.name] = fidelity.not_checked(config.precision, self._reference)
                return self._fidelity[config.name]
            assert self._reference is not None
            try:
                figures = fidelity.compare_outputs(fidelity.outputs(loaded.model), self._reference)
                self._fidelity[config.name] = fidelity.report(figures, config.precision)
            except Exception as exc:  # noqa: BLE001 - the check could not run: say so, keep the timings
                self._fidelity[config.name] = fidelity.not_checked(config.precision, exc)
        return self._fidelity[config.name]

    def _ensure_reference(self) -> None:
        if self._reference is None and self.check_fidelity:
            self.release()
            if self.progress:
                self.progress("computing the fp32 eager reference for the fidelity check")
            ref = loading.load(self.plan.checkpoint, REFERENCE, self.plan.device)
            try:
                self._reference = fidelity.outputs(ref.model)
            except Exception as exc:  # noqa: BLE001 - no reference: every configuration is "not checked"
                self._reference = exc
            finally:
                loading.unload(ref)

    def release(self) -> None:
        if self._loaded is not None:
            loading.unload(self._loaded)
            self._loaded = None

    def measure(self, case: Case, timed: Callable[[Callable[[], None], int, int], None]) -> ConfigResult:
        """Run `case` through `timed(fn, rounds, warmup)` (pytest-benchmark's pedantic, or a plain loop).

        Raises Unavailable (skip) with the exact reason; any other failure is recorded, then re-raised.
        """
        config = case.config
        reason = configs.unavailable_reason(config, current_stack(), self.plan.device.type)
        if reason:
            self._add(ConfigResult(config.name, case.batch_size, "unavailable", reason, changes=config.changes()))
            raise Unavailable(reason)
        try:
            self._ensure_reference()
            loaded = self._model_for(config)
            measurer = Measurer(loaded, self.plan.workload(case.batch_size))
            records: list[dict[str, float]] = []
            started = time.perf_counter()

            def one_call() -> None:
                if self.progress:
                    self.progress(self._where(case, len(records), time.perf_counter() - started))
                records.append(measurer.call())

            timed(one_call, self.plan.rounds, self.plan.warmup)
            self._durations.append(time.perf_counter() - started)
            fid = self._fidelity_of(config, loaded) if self.check_fidelity else None
        except Exception as exc:
            self._add(
                ConfigResult(
                    config.name, case.batch_size, "failed", f"{type(exc).__name__}: {exc}", changes=config.changes()
                )
            )
            self.release()
            raise
        result = ConfigResult(
            config.name,
            case.batch_size,
            "ok",
            # pytest-benchmark calls once, without warm-up, when disabled (--benchmark-disable, xdist)
            rounds=records[self.plan.warmup :] if len(records) > self.plan.warmup else records,
            counts=measurer.last_counts.to_dict() if measurer.last_counts else None,
            load_s=loaded.load_s,
            changes=config.changes(),
            fidelity=fid,
        )
        return self._add(result)

    def _where(self, case: Case, calls_done: int, elapsed: float) -> str:
        """Progress: which benchmark of how many, which call, and the time left (from the calls and benchmarks
        measured so far; unavailable benchmarks cost nothing)."""
        total = self.plan.warmup + self.plan.rounds
        phase = (
            f"warm-up {calls_done + 1}/{self.plan.warmup}"
            if calls_done < self.plan.warmup
            else (f"round {calls_done - self.plan.warmup + 1}/{self.plan.rounds}")
        )
        ids = [c.id for c in self.planned]
        position = f"[{ids.index(case.id) + 1}/{len(ids)}] " if case.id in ids else ""
        here = elapsed / calls_done * (total - calls_done) if calls_done else None
        text = f"{position}{case.id}: {phase}" + (f", ~{_duration(here)} left in it" if here is not None else "")
        if case.id in ids and self._durations:
            after = self.planned[ids.index(case.id) + 1 :]
            stack, device = current_stack(), self.plan.device.type
            todo = sum(configs.unavailable_reason(c.config, stack, device) is None for c in after)
            per = sum(self._durations) / len(self._durations)
            text += f", ~{_duration(todo * per + (here or per))} left in the run"
        return text

    def save_run(self, results_dir: Path, suffix: str = "") -> Path:
        """Every run is kept in a folder of its own (its report goes beside it; the folders are the history)."""
        return history.keep(results_dir, self.record, suffix)


def _duration(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds < 90 else f"{seconds / 60:.0f}min"


def benchmark_extra_info(result: ConfigResult) -> dict[str, Any]:
    """What goes into pytest-benchmark's JSON beside its own stats: our medians and every raw round."""
    return {
        "config": result.config,
        "batch_size": result.batch_size,
        "counts": result.counts,
        "medians": {m: result.summary(m).median for m in result.metrics()},
        "rounds": result.rounds,
        "changes": result.changes,
        "fidelity": result.fidelity,
    }
