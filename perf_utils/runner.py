"""Run configurations x batch sizes outside pytest (the CLI, the two-stack comparison).

One configuration's model is loaded once for all its batch sizes and freed before the next, so one
configuration's memory never shows in another's peak.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

import perf_utils
from perf_utils import checkpoints, configs, loading
from perf_utils.checkpoints import Checkpoint
from perf_utils.configs import OptimizationConfig
from perf_utils.measure import Measurer
from perf_utils.record import ConfigResult, RunRecord
from perf_utils.stack import Stack, current_stack, hardware_key
from perf_utils.trackers.memory import host_allocator, pin_host_allocator
from perf_utils.workload import Workload, default_tokens

Progress = Callable[[str], None]


def stderr_progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class RunPlan:
    checkpoint: Checkpoint
    device: torch.device
    n_tokens: int
    rounds: int
    warmup: int
    threads: int | None = None  # CPU intra-op threads; None keeps torch's default

    def apply(self) -> str | None:
        """Process-wide settings of the plan. One thread makes a CPU tier robust to a busy machine: two threads
        fighting another process for two cores made a tiny call ~20x slower here. The host allocator is pinned
        so host peaks repeat (trackers.memory.pin_host_allocator); returns that setting."""
        if self.threads:
            torch.set_num_threads(self.threads)
        return pin_host_allocator()

    @classmethod
    def make(
        cls,
        checkpoint: str | None,
        device: torch.device,
        n_tokens: int | None = None,
        rounds: int | None = None,
        warmup: int | None = None,
        threads: int | None = None,
    ) -> RunPlan:
        on_cpu = device.type == "cpu"
        return cls(
            checkpoint=checkpoints.resolve(checkpoint),
            device=device,
            n_tokens=n_tokens or default_tokens(device.type),
            rounds=rounds if rounds is not None else (5 if on_cpu else 10),
            warmup=warmup if warmup is not None else (1 if on_cpu else 2),
            threads=threads,
        )

    def workload(self, batch_size: int) -> Workload:
        return Workload(n_tokens=self.n_tokens, batch_size=batch_size)


def environment(stack: Stack) -> dict[str, Any]:
    return {"suite": perf_utils.__version__, **stack.to_dict()}


def new_record(plan: RunPlan, stack: Stack | None = None) -> RunRecord:
    stack = stack or current_stack()
    ck = plan.checkpoint
    return RunRecord(
        hardware=hardware_key(stack, plan.device.type),
        device=str(plan.device),
        checkpoint={"key": ck.key, "kind": ck.kind, "revision": ck.revision},
        # The thread count changes what a CPU timing means: part of what must match to compare.
        workload={
            **plan.workload(1).identity(),
            "threads": torch.get_num_threads(),
            # How host memory was allocated changes the host peak: part of what must match too.
            "host_allocator": host_allocator(),
        },
        environment=environment(stack),
        suite_version=perf_utils.__version__,
    )


def run_config(
    plan: RunPlan, config: OptimizationConfig, batch_sizes: Iterable[int], progress: Progress | None = None
) -> list[ConfigResult]:
    batch_sizes = list(batch_sizes)
    reason = configs.unavailable_reason(config, current_stack(), plan.device.type)
    if reason:
        return [ConfigResult(config.name, bs, "unavailable", reason, changes=config.changes()) for bs in batch_sizes]
    try:
        loaded = loading.load(plan.checkpoint, config, plan.device)
    except Exception as exc:  # noqa: BLE001 - a configuration that fails to load is a result, not a crash
        why = f"load failed: {type(exc).__name__}: {exc}"
        return [ConfigResult(config.name, bs, "failed", why, changes=config.changes()) for bs in batch_sizes]
    results = []
    try:
        for bs in batch_sizes:
            measurer = Measurer(loaded, plan.workload(bs))
            started = time.perf_counter()

            def report(phase: str, i: int, n: int, bs: int = bs, started: float = started) -> None:
                if progress:
                    progress(f"[{config.name} bs{bs}] {phase} {i}/{n} ({time.perf_counter() - started:.1f}s)")

            try:
                rounds = measurer.rounds(plan.rounds, plan.warmup, report)
            except Exception as exc:  # noqa: BLE001
                results.append(
                    ConfigResult(config.name, bs, "failed", f"{type(exc).__name__}: {exc}", changes=config.changes())
                )
                continue
            results.append(
                ConfigResult(
                    config.name,
                    bs,
                    "ok",
                    rounds=rounds,
                    counts=measurer.last_counts.to_dict() if measurer.last_counts else None,
                    load_s=loaded.load_s,
                    changes=config.changes(),
                )
            )
    finally:
        loading.unload(loaded)
    return results


def run_matrix(
    plan: RunPlan,
    selected: Iterable[OptimizationConfig],
    batch_sizes: Iterable[int] = configs.BATCH_SIZES,
    progress: Progress | None = None,
) -> RunRecord:
    loading.quiet_transformers()
    plan.apply()
    record = new_record(plan)
    batch_sizes = list(batch_sizes)
    for config in selected:
        record.results.extend(run_config(plan, config, batch_sizes, progress))
    return record
