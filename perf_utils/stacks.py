"""Gate an upgrade: run the suite in two software stacks on the same machine and compare them.

Each stack is a virtual environment made from pip requirements (cached by their hash), with this suite
installed into it, so the very same benchmarks run under, say, transformers 4.48.3 + optimum 1.27.0 (pinned)
and the current releases (candidate). The candidate is judged by the same rules as a nightly run: regressions,
improvements, and configurations lost (BetterTransformer after optimum 2) or gained.
"""

from __future__ import annotations

import hashlib
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from perf_utils import baselines
from perf_utils.compare import Comparison, compare
from perf_utils.record import RUN_FILE, RunRecord
from perf_utils.thresholds import Thresholds

REPO = Path(__file__).resolve().parents[1]
TORCH_REQUIREMENT = "torch==2.13.0"  # the CPU wheel on this project's machines; override for GPU runners


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class StackSpec:
    name: str
    requirements: tuple[str, ...]

    @classmethod
    def parse(cls, name: str, spec: str) -> StackSpec:
        """A requirements file, or requirements separated by spaces ("transformers==4.48.3 optimum==1.27.0")."""
        path = Path(spec)
        if path.is_file():
            lines = [ln.split("#", 1)[0].strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            return cls(name, tuple(ln for ln in lines if ln))
        reqs = tuple(shlex.split(spec))
        if not reqs:
            raise StackError(f"--{name}: give requirements or a requirements file; got {spec!r}")
        return cls(name, reqs)

    def key(self, torch_requirement: str, suite: bytes | None = None) -> str:
        """Names the cached venv. The suite's own pyproject.toml is part of it: a venv made before the suite
        gained a dependency lacks it, and would fail every run in that stack."""
        suite = (REPO / "pyproject.toml").read_bytes() if suite is None else suite
        text = "\n".join((torch_requirement, *self.requirements)).encode() + b"\n" + suite
        return f"{self.name}-{hashlib.sha256(text).hexdigest()[:12]}"


def _run(cmd: list[str], what: str, **kwargs: object) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if proc.returncode != 0:
        raise StackError(
            f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )


def ensure_venv(spec: StackSpec, root: Path, torch_requirement: str, progress: Callable[[str], None]) -> Path:
    """Create (once) a venv with torch, this suite and the stack's requirements; returns its python."""
    venv = root / spec.key(torch_requirement)
    python = venv / "bin" / "python"
    done = venv / ".bark-perf-complete"
    if done.exists():
        return python
    progress(f"[{spec.name}] creating {venv} with {' '.join(spec.requirements)}")
    _run([sys.executable, "-m", "venv", "--clear", str(venv)], f"creating the {spec.name} venv")
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    _run([*pip, "--upgrade", "pip"], "upgrading pip")
    _run([*pip, torch_requirement], f"installing {torch_requirement}")  # first: no CUDA build pulled in
    _run([*pip, "-e", str(REPO), *spec.requirements], f"installing the {spec.name} stack")
    done.write_text("\n".join(spec.requirements) + "\n")
    return python


def run_suite(python: Path, name: str, out_dir: Path, pytest_args: list[str]) -> tuple[RunRecord, Path]:
    """The same command a person runs, in the stack's venv; the run record it saved."""
    out_dir.mkdir(parents=True, exist_ok=True)
    before = set(out_dir.glob(f"*/{RUN_FILE}"))
    cmd = [str(python), "-m", "pytest", "benchmarks", "-p", "no:cacheprovider", "-q",
           "--bark-results-dir", str(out_dir), *pytest_args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    new = sorted(set(out_dir.glob(f"*/{RUN_FILE}")) - before)
    if not new:
        raise StackError(
            f"the {name} stack saved no run (exit {proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-2000:]}"
        )
    return baselines.load(new[-1]), new[-1]


def versions_line(record: RunRecord) -> str:
    pk = record.environment.get("packages", {})
    return ", ".join(f"{p} {pk.get(p) or '-'}" for p in ("torch", "transformers", "optimum", "accelerate"))


def compare_stacks(
    pinned: StackSpec,
    candidate: StackSpec,
    root: Path,
    out_dir: Path,
    pytest_args: list[str],
    pyproject: Path,
    allow_lost: set[str],
    torch_requirement: str = TORCH_REQUIREMENT,
    progress: Callable[[str], None] = print,
) -> tuple[RunRecord, RunRecord, Comparison]:
    records = []
    for spec in (pinned, candidate):
        python = ensure_venv(spec, root, torch_requirement, progress)
        progress(f"[{spec.name}] running the suite")
        record, path = run_suite(python, spec.name, out_dir / spec.name, pytest_args)
        progress(f"[{spec.name}] {versions_line(record)}: {path}")
        records.append(record)
    problems = [p for p in baselines.incompatibilities(*records) if not p.startswith("checkpoint revision")]
    if problems:
        raise StackError("the two runs are not comparable: " + "; ".join(problems))
    thresholds = Thresholds.from_pyproject(pyproject, records[1].device_type)
    return records[0], records[1], compare(records[0], records[1], thresholds, allow_lost)
