"""One invocation in a fresh process: `python -m perf_utils.measure.worker [--serve] SPEC OUT`.

Why a process: the medians of separate processes spread several times wider than the rounds of one (memory
layout, allocator and cache state, what the machine does in those seconds), and reloading the model inside one
process does not reproduce that spread (docs/gate-quality.md, "Where the noise lives"). The parent (`measure.run.Run`,
through `Worker`) writes the plan and the cases as JSON, the worker measures them through the same
`Run.invocation` an in-process run uses and writes back its results; progress lines are relayed as they come. A
worker that dies makes every one of its benchmarks `failed` with the end of its output, never a lost run.

With `--serve` the worker loads and warms up, then measures one trial per `trial` line on its stdin and answers
each with a ready line (`Run.serve`): `compare-stacks` keeps one such worker per stack and alternates them
(`measure.alternate`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from perf_utils.measure import forks
from perf_utils.measure.run import HEADER, TRIAL, Case, Interrupted, Invocation, Run, RunPlan
from perf_utils.record.golden import Fingerprint
from perf_utils.record.record import FAILED, FORKED, FRESH, BenchmarkResult

PROGRESS = "@@bark-progress "  # a worker's progress line; any other output is kept for an error message
READY = "@@bark-ready"  # a serving worker has warmed up, or finished a trial
TAIL = 3000  # characters of a dead worker's output kept in its benchmarks' reason
CUT_WAIT_S = 5.0  # how long an interrupted plain worker is given to write back the rounds it took


def plan_spec(plan: RunPlan) -> dict[str, Any]:
    """Every field of the plan, the checkpoint and device as what resolves them again."""
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    return {**fields, "checkpoint": plan.checkpoint.spec, "device": str(plan.device)}


def case_spec(case: Case) -> dict[str, Any]:
    return {"config": case.config.name, "fault": case.config.fault, "batch_size": case.batch_size}


def read_plan(spec: dict[str, Any]) -> RunPlan:
    from perf_utils.bark import checkpoints
    from perf_utils.bark.device import resolve_device

    resolved = {"checkpoint": checkpoints.resolve(spec["checkpoint"]), "device": resolve_device(spec["device"])}
    return RunPlan(**{**spec, **resolved})


def read_case(spec: dict[str, Any]) -> Case:
    """The configuration by name from the registry, with its injected fault rebuilt (tests, gate-quality)."""
    from perf_utils.bark import configs
    from perf_utils.measure import faults

    config = configs.get(spec["config"])
    if spec.get("fault"):
        config = faults.inject(config, spec["fault"])
    return Case(config, spec["batch_size"])


def _spec_file(folder: Path, plan: RunPlan, selected: list[Case], index: int, check_fidelity: bool) -> Path:
    spec_file = folder / "spec.json"
    spec = {"plan": plan_spec(plan), "cases": [case_spec(c) for c in selected], "index": index,
            "fidelity": check_fidelity}  # fmt: skip
    spec_file.write_text(json.dumps(spec))
    return spec_file


def _relay(line: str, progress: Any, other: list[str]) -> None:
    if line.startswith(PROGRESS):
        if progress:
            progress(line[len(PROGRESS) :].rstrip("\n"))
    else:
        other.append(line)


def _read(out_file: Path, code: int, other: list[str], selected: list[Case], index: int) -> Invocation:
    """What the worker wrote; every benchmark failed with the end of its output when it wrote nothing."""
    if code != 0 or not out_file.exists():
        tail = "".join(other)[-TAIL:]
        reason = f"worker process of invocation {index + 1} exited with status {code}: {tail.strip()}"
        results = [BenchmarkResult(c.config.name, c.batch_size, FAILED, reason, changes=c.config.changes())
                   for c in selected]  # fmt: skip
        return Invocation(results, interleaved=False, tracebacks={c.id: tail for c in selected})
    data = json.loads(out_file.read_text())
    return Invocation(
        [BenchmarkResult.from_dict(r) for r in data["results"]],
        interleaved=data["interleaved"],
        note=data["note"],
        tracebacks=data["tracebacks"],
        reference=Fingerprint.from_dict(data["reference"]) if data["reference"] else None,
        header=data.get("header"),
    )


def forked(plan: RunPlan) -> bool:
    """Whether this run's plain invocations are forked from the zygote (`measure.forks`): on the CPU, where a
    fresh interpreter's imports and teardown cost as much as a short invocation's own measuring."""
    return plan.device.type == "cpu" and forks.available()


def invoke(plan: RunPlan, selected: list[Case], index: int, check_fidelity: bool, progress: Any = None) -> Invocation:
    """Run invocation `index` of `selected` in a worker process of this Python and read back what it measured."""
    fork = forked(plan)
    return Worker(sys.executable, plan, selected, index, check_fidelity, progress, serve=False, fork=fork).finish()


class Worker:
    """A worker process measuring one invocation, in any Python (another stack's venv). Plain, it measures the
    whole invocation by itself and `finish()` waits for it. Serving (`serve`), it loads and warms up when started;
    each `trial()` measures every case once more, and `finish()` ends it. Either way `finish()` returns the
    invocation; a worker that died answers no more trials and finishes as failed benchmarks carrying its last
    output, and one left behind (an interrupted session) is killed."""

    def __init__(self, python: str, plan: RunPlan, selected: list[Case], index: int, check_fidelity: bool,
                 progress: Any = None, serve: bool = True, fork: bool = False) -> None:  # fmt: skip
        self.selected, self.index, self.progress = selected, index, progress
        self.started = FORKED if fork else FRESH
        self._tmp = tempfile.TemporaryDirectory(prefix="bark-serve-" if serve else "bark-invocation-")
        folder = Path(self._tmp.name)
        spec_file, self.out_file = _spec_file(folder, plan, selected, index, check_fidelity), folder / "out.json"
        args = [*(["--serve"] if serve else []), str(spec_file), str(self.out_file)]
        self.other: list[str] = []
        self.proc: subprocess.Popen[str] | forks.Forked
        if fork:
            assert not serve and python == sys.executable, "only a plain invocation of this Python is forked"
            try:
                self.proc = forks.Forked(args)
            except (OSError, RuntimeError) as e:  # no zygote: a fresh interpreter measures the same, slower
                _relay(f"{PROGRESS}forking a worker failed ({e}); starting a fresh interpreter", progress, self.other)
                fork, self.started = False, FRESH
        if not fork:
            cmd = [python, "-m", "perf_utils.measure.worker", *args]
            stdin = subprocess.PIPE if serve else subprocess.DEVNULL
            self.proc = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                         bufsize=1)  # fmt: skip
        try:
            self.alive = serve and self._ready()
        except BaseException:
            self.close()
            raise

    def _ready(self, say: bool = True) -> bool:
        """Read until the worker is ready again; False once it has ended. `say`: relay its progress lines (a
        trial's are not: whoever drives the trials says where they stand, `measure.alternate`)."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.rstrip("\n") == READY:
                return True
            _relay(line, self.progress if say else None, self.other)
        return False

    def _send(self, command: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.alive = False

    def trial(self) -> None:
        if self.alive:
            self._send(TRIAL)
            self.alive = self.alive and self._ready(say=False)

    def finish(self) -> Invocation:
        try:
            if self.alive:
                self._send("finish")
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                _relay(line, self.progress, self.other)
            code = self.proc.wait()
            done = _read(self.out_file, code, self.other, self.selected, self.index)
            done.started = self.started
            return done
        except KeyboardInterrupt as stop:
            part = self.cut_short()
            if part is None:
                raise
            raise Interrupted(part) from stop
        finally:
            self.close()

    def cut_short(self) -> Invocation | None:
        """Ctrl-C while the worker measures (or, serving, waits for its next trial): it is interrupted too (a CI
        runner's SIGINT reaches only the process it started; a terminal's reaches both, and the worker heeds only
        the first) and given `CUT_WAIT_S` to write back the rounds it took. None when it wrote nothing."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGINT)
        deadline = time.monotonic() + CUT_WAIT_S
        stdout = self.proc.stdout
        assert stdout is not None
        while (left := deadline - time.monotonic()) > 0 and select.select([stdout], [], [], left)[0]:
            line = stdout.readline()  # its last words are drained (a full pipe would stall it) ...
            if not line:
                break  # ... until it ends: its rounds are written by then, or never will be
            if not line.startswith(PROGRESS):  # progress is stale by now
                self.other.append(line)
        if not self.out_file.exists():
            return None
        done = _read(self.out_file, 0, self.other, self.selected, self.index)
        done.started = self.started
        return done

    def close(self) -> None:
        """Never leave a worker measuring behind us (an interrupted session)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._tmp.cleanup()


def _interrupt_once(signum: int, frame: Any) -> None:
    """The first SIGINT interrupts the invocation; any later one (a terminal's Ctrl-C reaches the worker, and the
    parent passes on its own) must not cut the writing of the rounds taken so far."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    serve = argv[:1] == ["--serve"]
    spec_file, out_file = (Path(a) for a in argv[serve:])
    spec = json.loads(spec_file.read_text())

    def progress(message: str) -> None:
        print(PROGRESS + message, flush=True)

    run = Run(read_plan(spec["plan"]), progress, check_fidelity=bool(spec["fidelity"]))
    selected = [read_case(c) for c in spec["cases"]]
    signal.signal(signal.SIGINT, _interrupt_once)
    try:
        if serve:
            done = run.serve(selected, spec["index"], iter(sys.stdin.readline, ""), lambda: print(READY, flush=True))
        else:
            done = run.invocation(selected, spec["index"])
    except Interrupted as stop:  # Ctrl-C, or the parent passing on its own: the rounds so far go back
        done = stop.part
    reference = done.reference.to_dict() if done.reference else None
    header = {k: getattr(run.record, k) for k in HEADER}
    data = {"results": [r.to_dict() for r in done.results], "interleaved": done.interleaved, "note": done.note,
            "tracebacks": done.tracebacks, "reference": reference, "header": header}  # fmt: skip
    partial = out_file.with_suffix(".partial")
    partial.write_text(json.dumps(data))
    os.replace(partial, out_file)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the result is written: skip seconds of torch and transformers' teardown
