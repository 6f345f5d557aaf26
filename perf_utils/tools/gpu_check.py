"""The GPU check in one command, for whoever has a GPU for a few minutes: `python -m perf_utils gpu-check --out DIR`.

Steps in order of value, each with its own time limit and its own log written as it runs (a check cut short keeps
what it did; a step that overruns is killed with its workers): a bare offload call (`tools.bare_call`: where the
weights run, with none of the suite's instruments), the tiny matrix (every accelerator path, fidelity, golden),
suno/bark's shapes with random weights (`random:bark`, no download) in the blog's configurations at batch 1 and 8,
then, given a legacy stack (`--legacy-path`, a folder of transformers 4.48 / optimum 1.x, and accelerate<1.10 for
offload, to put first on PYTHONPATH), the same bare call and the BetterTransformer configurations. After each run
the blog's relative figures are printed beside the measured ones (`report.blog`) and its record is copied beside
its log. The limits add up to under 8 minutes, and the time a step leaves unused goes to the next one; no network
is needed. A step that reaches its limit is first interrupted like Ctrl-C, so its record keeps the rounds it
measured, then killed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perf_utils.record import store
from perf_utils.report.blog import batching_table, claims_table


@dataclass(frozen=True)
class CheckStep:
    """One step of the GPU check: a command with its own time limit and log (what the check runs, in order of
    value; not a step of an upgrade's chain, `tools.by_package.Step`)."""

    name: str
    why: str
    args: tuple[str, ...]  # after `pytest benchmarks`, or after `python -m` for a step that is not a benchmark run
    timeout_s: int
    legacy: bool = False  # runs under the legacy stack (--legacy-path)
    benchmarks: bool = True  # a `pytest benchmarks` run (its record is kept and the blog set beside it)


# Sized from runs on an NVIDIA H200. 2026-11-27 (docs/gpu-2026-11-27-h200 and -h200-b): the tiny matrix took 42 s;
# bark-shaped fp32/fp16/cpu_offload/offload+fp16 at batch 1 and 8 and 32 tokens ran into 190 s with its last 5 rounds
# left; torch_compile is left out of the tiny matrix (compiling alone outran the step). 2026-12-04
# (docs/gpu-2026-12-04-h200), the whole check in 456 s: bare call 20 s (CUDA's start and tiny built from nothing),
# tiny 44 s, bark's shapes 216 s (random:bark built on the GPU, then loaded 4 times, the fp32 reference, 2-4
# warm-up calls of 1.5-8 s each), the legacy bare call 23 s, the legacy BetterTransformer step 130 s. A bare call
# gets nothing the steps before it left (it is first), so its limit has room; a benchmark step gets GRACE_S of its
# limit to keep what it measured, plus what the steps before it left unused.
COMMON = ("--bark-device", "cuda", "--bark-warmup", "1", "--bark-invocations", "1", "--bark-rounds", "2")
BARE = ("perf_utils.tools.bare_call", "--checkpoint", "tiny", "--batch-size", "1", "--tokens", "16")
STEPS = (
    CheckStep("offload-bare", "CPU offload with none of the suite's instruments: where do the weights run?",
              (*BARE, "--config", "cpu_offload"), 30, benchmarks=False),
    CheckStep("tiny-matrix", "every configuration on the accelerator: timers, peaks, NVML, fidelity, golden",
              ("--bark-checkpoint", "tiny", "--bark-configs", "fp32,fp16,bf16,cpu_offload,offload+fp16",
               "--bark-tokens", "32", *COMMON), 55),
    CheckStep("bark-shapes", "suno/bark's shapes: the blog's configurations at batch 1 and 8 (offload fidelity too)",
              ("--bark-checkpoint", "random:bark", "--bark-configs", "fp32,fp16,cpu_offload,offload+fp16",
               "--bark-batch-sizes", "1,8", "--bark-tokens", "32", *COMMON), 235),
    CheckStep("offload-bare-legacy", "the blog's best combination, bare, under the legacy stack",
              (*BARE, "--config", "offload+bettertransformer+fp16"), 30, legacy=True, benchmarks=False),
    CheckStep("legacy-bettertransformer", "BetterTransformer on suno/bark's shapes under transformers 4.48 / optimum 1",
              ("--bark-checkpoint", "random:bark", "--bark-configs",
               "fp32,bettertransformer,bettertransformer+fp16,offload+bettertransformer+fp16",
               "--bark-batch-sizes", "1", "--bark-tokens", "32", *COMMON), 125, legacy=True),
)  # fmt: skip
# What a lent GPU's time after the check can hold (`--extra`): the blog's batching question, where throughput stops
# growing, on suno/bark's shapes in fp16 (the blog's batching configuration), without the fidelity check.
EXTRA = (
    CheckStep("batching", "the blog's batching question on suno/bark's shapes: fp16 throughput at batch 1 to 64",
              ("--bark-checkpoint", "random:bark", "--bark-configs", "fp16", "--bark-batch-sizes", "1,8,16,32,64",
               "--bark-tokens", "32", "--bark-no-fidelity", *COMMON), 150),
)  # fmt: skip


def _plugin_args() -> list[str]:
    """The plugin loads by its entry point where the suite is installed; on a GPU machine used from a checkout
    (PYTHONPATH, no install) it must be named."""
    from importlib.metadata import entry_points

    installed = any(ep.name == "bark_perf" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "perf_utils.plugin"]


def commands(
    out: Path, legacy_path: Path | None, steps: tuple[CheckStep, ...] | None = None
) -> list[tuple[CheckStep, list[str] | None, dict[str, str]]]:
    """Each step's command and environment (of `STEPS` unless told); None for a step that cannot run here (it
    says why in the log)."""
    planned = []
    for step in STEPS if steps is None else steps:
        env = dict(os.environ)
        if step.legacy:
            if legacy_path is None:
                planned.append((step, None, env))
                continue
            env["PYTHONPATH"] = os.pathsep.join([str(legacy_path), str(Path.cwd()), env.get("PYTHONPATH", "")])
        if not step.benchmarks:
            planned.append((step, [sys.executable, "-m", *step.args], env))
            continue
        folder = out / step.name
        cmd = [sys.executable, "-m", "pytest", "benchmarks", *_plugin_args(), "-v", "-p", "no:cacheprovider",
               "--bark-results-dir", str(folder / "results"), "--bark-baselines-dir", str(folder / "baselines"),
               "--benchmark-storage", f"file://{folder / 'pytest-benchmark'}", *step.args]  # fmt: skip
        planned.append((step, cmd, env))
    return planned


# This long before its limit a benchmark step is interrupted (SIGINT) to keep what it measured: from the interrupt
# to its exit, record and report written, took 3-5 s on this project's 2-core CPU (tiny, four benchmarks). A
# bare call has nothing to keep: it is killed at its limit.
GRACE_S = 8


def _default_sigint() -> None:
    """A step must be interruptible even where this check was started with SIGINT ignored (a background job of a
    non-interactive shell, as a remote runner starts it): Python turns SIGINT into KeyboardInterrupt only when
    it starts with the default handler."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_limited(cmd: list[str], log: Any, env: dict[str, str], timeout_s: int, grace_s: int = GRACE_S) -> int | None:
    """The step's exit status, or None when it ran out of time. `grace_s` before its limit it is interrupted
    like Ctrl-C, so that a benchmark run keeps and reports the rounds it measured (`measure.run`); at the limit it
    and its worker processes are killed."""
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                            preexec_fn=_default_sigint)  # fmt: skip
    try:
        return proc.wait(timeout=max(timeout_s - grace_s, 1))
    except subprocess.TimeoutExpired:
        pass
    if grace_s:
        os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
    with contextlib.suppress(ProcessLookupError):  # its workers too, even when it ended within the grace
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return None


def run(
    out: Path,
    legacy_path: Path | None,
    say: Callable[[str], None] = print,
    steps: tuple[CheckStep, ...] | None = None,
    within_s: float | None = None,
) -> int:
    """Run every step (of `STEPS` unless told); returns how many failed or ran out of time. The time a step leaves
    unused is added to the next step's limit: the whole check stays within the sum of the limits, and a step that
    needs more than its estimate (random:bark's, the tight one) can still finish when the quick steps before it
    were quick. `within_s`: no step's limit reaches past this many seconds from now (what a lent machine has left)."""
    out.mkdir(parents=True, exist_ok=True)
    failed, unused = 0, 0
    ends = None if within_s is None else time.monotonic() + within_s
    for step, cmd, env in commands(out, legacy_path, steps):
        log = out / f"{step.name}.log"
        limit = step.timeout_s + unused
        if ends is not None:
            limit = min(limit, int(ends - time.monotonic()))
        if cmd is None:
            log.write_text("skipped: no legacy stack given (--legacy-path DIR with transformers 4.48, optimum 1.x)\n")
            say(f"{step.name}: skipped (no --legacy-path)")
            unused = limit
            continue
        if limit < 1:
            log.write_text(f"skipped: no time left (--within {within_s:g})\n")
            say(f"{step.name}: skipped (no time left)")
            failed += 1
            continue
        added = limit - step.timeout_s
        extra = f": {step.timeout_s}s and {added}s the steps before left" if added > 0 else ""
        say(f"{step.name} (at most {limit}s{extra}): {step.why}; log: {log}")
        started = time.monotonic()
        with log.open("w", encoding="utf-8") as f:
            f.write(" ".join(cmd) + "\n\n")
            f.flush()
            code = _run_limited(cmd, f, env, limit, GRACE_S if step.benchmarks else 0)
        elapsed = time.monotonic() - started
        unused = max(int(limit - elapsed), 0)
        took = f"{elapsed:.0f}s"
        kept = sorted((out / step.name / "results").glob("*/run.json"))
        if step.benchmarks and kept:
            shutil.copy(kept[-1], out / f"{step.name}.json")  # beside the log: the record of the step's run
            record = store.load(kept[-1])
            table = "\n\n".join(t for t in (claims_table(record), batching_table(record)) if t)
            with log.open("a", encoding="utf-8") as f:
                f.write("\n" + table + "\n")
            say(table)
        status = f"timed out after {took}" if code is None else f"exit {code} after {took}"  # sizes the limits
        if code is None and step.benchmarks and kept:
            status += f" (interrupted first: {step.name}.json keeps the rounds it measured)"
        failed += code not in (0, 1)  # 1: a benchmark failed or regressed: the log says which, the run is kept
        say(f"{step.name}: {status}")
    return failed
