"""Gate an upgrade: run the suite in two software stacks on the same machine and compare them.

Each stack is a virtual environment made from pip requirements (cached by their hash), with this suite
installed into it, so the very same benchmarks run under, say, transformers 4.48.3 + optimum 1.27.0 (pinned)
and the current releases (candidate): one serving worker per stack, their trials alternating, so the candidate is
judged on paired per-trial ratios that machine drift cannot move (`measure.alternate`), by the same rules as a
nightly run otherwise: regressions, improvements, and configurations lost (BetterTransformer after optimum 2) or
gained.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from perf_utils import options
from perf_utils.options import RunOptions
from perf_utils.record import store
from perf_utils.record.record import STACK_PACKAGES, RunRecord

REPO = Path(__file__).resolve().parents[2]
TORCH_REQUIREMENT = "torch==2.13.0"  # the CPU wheel on this project's machines; override for GPU runners
CURRENT = "current"  # as a stack: the environment running this command, as it is (no venv is built)
BASELINE = "baseline"  # as a stack: the one that measured this machine's stored baseline of the checkpoint


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class StackSpec:
    name: str
    requirements: tuple[str, ...]
    current: bool = False  # the running environment itself (e.g. a CI venv just upgraded)
    torch: str | None = None  # this stack's own torch requirement (one taken from a record); None: --torch
    source: str | None = None  # the record it was taken from

    @classmethod
    def parse(cls, name: str, spec: str) -> StackSpec:
        """A requirements file, requirements separated by spaces ("transformers==4.48.3 optimum==1.27.0"), or
        `current`: the environment running this command."""
        if spec == CURRENT:
            return cls(name, (), current=True)
        path = Path(spec)
        if path.suffix == ".json":
            return cls.of_record(name, path)
        if path.is_file():
            lines = [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            return cls(name, tuple(ln for ln in lines if ln))
        if path.suffix == ".txt" and " " not in spec.strip():  # a mistyped file, not a requirement: said at once
            raise StackError(f"--{name} {spec}: no such requirements file")
        reqs = tuple(shlex.split(spec))
        if not reqs:
            raise StackError(f"--{name}: give requirements or a requirements file; got {spec!r}")
        return cls(name, reqs)

    @classmethod
    def of_record(cls, name: str, path: Path) -> StackSpec:
        """The stack a kept run or a stored baseline was measured with (its `environment.packages`): measured
        again now, beside the candidate, it turns a comparison with a baseline from another day into a paired
        one in this session."""
        try:
            record = store.load(path)
        except store.BaselineError as exc:
            raise StackError(f"--{name}: {exc}") from None
        packages = record.environment.get("packages") or {}
        if not packages.get("transformers"):
            raise StackError(f"--{name} {path}: the record names no transformers version (environment.packages)")
        torch = packages.get("torch")
        # A local label (2.13.0+cpu) says which index the wheel came from; pip's pin is the version.
        torch_pin = f"torch=={torch.split('+')[0]}" if torch else None
        libraries = tuple(f"{p}=={packages[p]}" for p in STACK_PACKAGES if p != "torch" and packages.get(p))
        return cls(name, libraries, torch=torch_pin, source=str(path))

    def torch_requirement(self, default: str) -> str:
        return self.torch or default

    def describe(self) -> str:
        if self.current:
            return "this environment"
        reqs = " ".join((*([self.torch] if self.torch else []), *self.requirements))
        return reqs + (f" (as measured in {self.source})" if self.source else "")

    def key(self, torch_requirement: str, suite: bytes | None = None) -> str:
        """Names the cached venv. The suite's own dependencies are part of it (pyproject.toml and the
        requirements/*.txt it reads them from): a venv made before the suite gained a dependency lacks it, and
        would fail every run in that stack. Their comments and blank lines are not: rewording one must not cost
        every cached stack a rebuild (minutes of pip each). `suite`, when given, replaces the pyproject.toml read
        from disk."""
        suite = (REPO / "pyproject.toml").read_bytes() if suite is None else suite
        text = _uncommented(suite, r"^\s*#.*$")  # TOML: whole-line comments only (a # may sit inside a string)
        for path in sorted((REPO / "requirements").glob("*.txt")):
            text += f"\n{path.name}\n" + _uncommented(path.read_bytes(), r"(^|\s)#.*$")  # pip's comment rule
        text = "\n".join((self.torch_requirement(torch_requirement), *self.requirements, text))
        return f"{self.name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _uncommented(data: bytes, comment: str) -> str:
    """`data`'s lines with what `comment` matches removed, stripped, the blank ones left out."""
    lines = (re.sub(comment, "", line).strip() for line in data.decode().splitlines())
    return "\n".join(line for line in lines if line)


def _run(cmd: list[str], what: str, **kwargs: object) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise StackError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )


def ensure_venv(spec: StackSpec, root: Path, torch_requirement: str, progress: Callable[[str], None]) -> Path:
    """Create (once) a venv with torch, this suite and the stack's requirements; returns its python. One pip
    call with torch pinned: the pin alone keeps pip from pulling another (CUDA) build."""
    if spec.current:
        return Path(sys.executable)
    torch_requirement = spec.torch_requirement(torch_requirement)
    venv = root / spec.key(torch_requirement)
    python = venv / "bin" / "python"
    done = venv / ".bark-perf-complete"
    if done.exists():
        return python
    progress(f"[{spec.name}] creating {venv} with {' '.join(spec.requirements)} (one pip install: minutes)")
    started = time.monotonic()
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], f"creating the {spec.name} venv")
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    try:
        _run([*pip, torch_requirement, "-e", str(REPO), *spec.requirements], f"installing the {spec.name} stack")
    except StackError:
        shutil.rmtree(venv, ignore_errors=True)  # a stack pip cannot make leaves nothing behind
        raise
    done.write_text("\n".join(spec.requirements) + "\n")
    progress(f"[{spec.name}] built in {time.monotonic() - started:.0f} s")
    return python


def baseline_path(baselines_dir: Path, o: RunOptions) -> tuple[Path, bool]:
    """`--pinned baseline`: where this machine's stored baseline of the checkpoint the run options (`run_options`)
    name is (as `pytest benchmarks --benchmark-compare` would find it), and whether there is one."""
    from perf_utils.bark import checkpoints
    from perf_utils.bark.device import resolve_device
    from perf_utils.bark.environment import current_stack, hardware_key

    key = checkpoints.resolve(o.checkpoint).key
    path = store.path_for(baselines_dir, hardware_key(current_stack(), resolve_device(o.device).type), key)
    return path, path.is_file()


def run_options(pytest_args: list[str]) -> RunOptions:
    """The run options after `--`, spelled as for `pytest benchmarks` (`--bark-configs fp32,fp16`): one
    definition of each (`options.RUN`); anything else is an error naming it."""
    parser = argparse.ArgumentParser(prog="compare-stacks ... --", add_help=False, allow_abbrev=False)
    options.add_options(parser.add_argument, "--bark-", options.RUN)
    known, unknown = parser.parse_known_args([a for a in pytest_args if a != "--"])
    if unknown:
        raise StackError(
            f"compare-stacks takes the run options after --, as pytest spells them (--bark-configs, "
            f"--bark-batch-sizes, ...); not understood: {' '.join(unknown)}"
        )
    o = RunOptions.read(lambda name: getattr(known, name, None))
    if o.shard:
        raise StackError("--bark-shard: compare-stacks measures both stacks in one session; it cannot be sharded")
    return o


def versions_line(record: RunRecord) -> str:
    pk = record.environment.get("packages", {})
    return ", ".join(f"{p} {pk.get(p) or '-'}" for p in STACK_PACKAGES)


def run_stacks(
    pinned: StackSpec,
    candidate: StackSpec,
    root: Path,
    out_dir: Path,
    o: RunOptions,
    torch_requirement: str = TORCH_REQUIREMENT,
    progress: Callable[[str], None] = print,
    keep_runs: int | None = None,
) -> tuple[RunRecord, RunRecord, Path]:
    """Both stacks in one session of alternating trials (`measure.alternate`: one serving worker per stack's venv
    per invocation), so the comparison is paired; each record kept under `out_dir/<stack>/`. Returns the pinned and
    the candidate's records and the candidate's kept folder (its report goes there). The two runs are checked to be
    comparable (the checkpoint's revision may differ: each stack builds its own tiny checkpoint). Interrupted after
    a whole invocation, it returns the whole invocations, marked interrupted."""
    pythons = [ensure_venv(spec, root, torch_requirement, progress) for spec in (pinned, candidate)]
    records, folder = run_chain([pinned, candidate], pythons, out_dir, o, progress, keep_runs)
    return records[0], records[1], folder


def run_chain(
    specs: list[StackSpec],
    pythons: list[Path],
    out_dir: Path,
    o: RunOptions,
    progress: Callable[[str], None] = print,
    keep_runs: int | None = None,
) -> tuple[list[RunRecord], Path]:
    """Every stack of `specs` (each with its Python) in one session of alternating trials, so any two of them are
    paired; each record kept under `out_dir/<stack>/` (with at most `keep_runs` like it there, `--bark-keep-runs`).
    Returns the records in order and the last one's kept folder. The two ends are checked to be comparable."""
    from perf_utils.measure.alternate import SessionInterrupted, Side, alternate, plan_for_pairs
    from perf_utils.measure.run import select_cases

    plan = plan_for_pairs(o)
    selected = select_cases(o)
    sides = [Side(spec.name, str(python), selected) for spec, python in zip(specs, pythons, strict=True)]
    progress(f"{'both stacks' if len(sides) == 2 else f'{len(sides)} stacks'}, alternating trials: {plan.describe()}")
    try:
        records = alternate(plan, sides, o.fidelity, progress)
    except SessionInterrupted as stop:  # its whole invocations: kept and judged as interrupted (`finish`)
        records = stop.records
    kept = {}
    for side in sides:
        kept[side.name] = store.keep_run(out_dir / side.name, records[side.name])
        progress(f"[{side.name}] {versions_line(records[side.name])}: {kept[side.name]}")
        if keep_runs:
            like, _ = store.kept_runs(out_dir / side.name, like=records[side.name])
            if said := store.prune_runs(like, keep_runs, spare=kept[side.name]).said:
                progress(f"[{side.name}] {said}")
    old, new = records[sides[0].name], records[sides[-1].name]
    problems = [p for p in store.incompatibilities(old, new) if not p.startswith("checkpoint revision")]
    if problems:
        raise StackError("the two runs are not comparable: " + "; ".join(problems))
    return [records[side.name] for side in sides], kept[sides[-1].name].parent
