"""`compare-stacks --by-package`: an upgrade measured one package at a time, and which package made each change.

The chain's stacks from the requirements (pure), a stack pip cannot install joined to the next package's, the
verdicts of each step through the command on sessions of fake workers (latencies known), and one real session of
serving workers with one stack's calls made slower."""

from __future__ import annotations

import random
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest

from perf_utils import cli
from perf_utils.measure import alternate as alternate_module
from perf_utils.measure.faults import inject
from perf_utils.measure.run import Case, Invocation
from perf_utils.record import store
from perf_utils.record.record import OK, UNAVAILABLE, BenchmarkResult
from perf_utils.tools import by_package
from perf_utils.tools.by_package import Change, changes, requirements_by_package
from perf_utils.tools.upgrade import StackError, StackSpec

ROOT = Path(__file__).resolve().parents[1]
LEGACY = str(ROOT / "stacks/legacy.txt")
CURRENT = str(ROOT / "stacks/current.txt")
TORCH = "torch==2.13.0"


def _pins(path: str, package: str) -> str:
    """The version a stack file pins: the current stack is bumped at each release, and these tests follow it."""
    return requirements_by_package(StackSpec.parse("stack", path), TORCH)[package].split("==", 1)[1]


T_NOW, O_NOW, A_NOW = (_pins(CURRENT, p) for p in ("transformers", "optimum", "accelerate"))


def test_the_changes_from_the_legacy_stack_to_the_current_one_one_package_each():
    pinned = requirements_by_package(StackSpec.parse("pinned", LEGACY), TORCH)
    candidate = requirements_by_package(StackSpec.parse("candidate", CURRENT), TORCH)
    steps = changes(pinned, candidate)
    assert [c.package for c in steps] == ["transformers", "optimum", "accelerate"]  # torch is the same on both
    assert steps[0].label == f"transformers 4.48.3 -> {T_NOW}"
    # a given order goes first, the rest after it in the stack's own order
    assert [c.package for c in changes(pinned, candidate, ["Accelerate"])] == ["accelerate", "transformers", "optimum"]
    with pytest.raises(StackError, match=r"--by-package torch: not changed .* transformers, optimum, accelerate"):
        changes(pinned, candidate, ["torch"])


def test_what_counts_as_a_change():
    """A local label names an index, not a release; a range admits the version it contains; a package one side
    leaves unpinned is a change from or to what pip picks."""
    assert not changes({"torch": "torch==2.13.0+cu130"}, {"torch": "torch==2.13.0"})
    assert not changes({"transformers": "transformers>=4.48"}, {"transformers": "transformers==5.24.0"})
    assert changes({"transformers": "transformers>=4.48,<5"}, {"transformers": "transformers==5.24.0"})
    [added] = changes({}, {"tokenizers": "tokenizers==0.22.1"})
    assert (
        added == Change("tokenizers", None, "tokenizers==0.22.1") and added.label == "tokenizers (unpinned) -> 0.22.1"
    )
    assert changes({"a": "a>=1"}, {"a": "a>=2"})[0].label == "a >=1 -> >=2"
    with pytest.raises(StackError, match=r"--pinned: 'transformers=4\.48' is not a requirement pip reads"):
        requirements_by_package(StackSpec("pinned", ("transformers=4.48",)), TORCH)


def test_the_running_environment_as_a_stack_pins_what_is_installed():
    spec = by_package.of_environment("candidate", ["torch", "transformers", "not-a-package-here"])
    assert spec.requirements == (f"transformers=={metadata.version('transformers')}",)
    assert spec.torch == f"torch=={metadata.version('torch').split('+')[0]}"  # no local label


def _fake_stacks(monkeypatch, tmp_path, refuse=lambda spec: False):
    """Stacks are not built: each is a folder named after it; `refuse(spec)` makes its install fail as pip's would.
    Returns the list of stacks asked for."""
    asked = []

    def ensure_venv(spec, root, torch_requirement, progress):
        asked.append(spec)
        if refuse(spec):
            raise StackError(f"installing the {spec.name} stack failed (exit 1): pip ...\nResolutionImpossible: no")
        return tmp_path / "venvs" / spec.name / "python"

    monkeypatch.setattr(by_package, "ensure_venv", ensure_venv)
    return asked


class _Stack:
    """A serving worker without a process: its latency is the stack's (by the folder of its Python, `speed`), with
    1% noise per call."""

    speed: dict[str, float] = {}
    lost_in: tuple[str, ...] = ()  # stacks where bettertransformer cannot run

    def __init__(self, python, plan, cases, index, check_fidelity, progress=None):
        self.cases, self.rounds = cases, []
        self.stack = Path(python).parent.name
        self.level = self.speed.get(self.stack, 1.0)
        self.rng = random.Random(f"{python}-{index}")

    def trial(self):
        self.rounds.append({"latency_s": 0.3 * self.level * self.rng.gauss(1, 0.01)})

    def finish(self):
        return Invocation([self._result(c) for c in self.cases], True)

    def _result(self, case):
        if case.config.name == "bettertransformer" and self.stack in self.lost_in:
            return BenchmarkResult(case.config.name, case.batch_size, UNAVAILABLE, reason="needs optimum<2.0")
        return BenchmarkResult(case.config.name, case.batch_size, OK, rounds=self.rounds)

    def close(self):
        pass


def _changes(row: str) -> list[float]:
    """A table row's latency changes in %, step by step then the whole upgrade's."""
    return [float(x) for x in re.findall(r"([+-]\d+\.\d)%", row)]


def _by_package(tmp_path, speed, configs="fp32", lost_in=(), extra=()):
    _Stack.speed, _Stack.lost_in = speed, lost_in
    argv = ["compare-stacks", "--pinned", LEGACY, "--candidate", CURRENT, "--by-package", *extra,
            "--venvs-dir", str(tmp_path / "venvs"), "--results-dir", str(tmp_path / "results"), "--",
            "--bark-configs", configs, "--bark-batch-sizes", "1", "--bark-rounds", "8", "--bark-invocations", "3",
            "--bark-no-fidelity"]  # fmt: skip
    return cli.main(argv)


def test_the_package_that_made_a_regression_is_named(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """transformers 5 with optimum 1.27 cannot be installed (as if pip refused it): the two change in one step,
    which makes the whole upgrade's 25%; accelerate's step changes nothing. The command fails, as the upgrade gate
    does, and says which step made it, in the terminal and in `by-package.md` beside the report."""
    monkeypatch.setattr(alternate_module, "Worker", _Stack)

    def refuse(spec):
        return f"transformers=={T_NOW}" in spec.requirements and "optimum==1.27.0" in spec.requirements

    asked = _fake_stacks(monkeypatch, tmp_path, refuse)
    code = _by_package(
        tmp_path,
        {"+transformers+optimum": 1.25, "candidate": 1.25},
        "fp32,bettertransformer",
        lost_in=("+transformers+optimum", "candidate"),
    )
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert [s.name for s in asked] == ["pinned", "+transformers", "+transformers+optimum", "candidate"]
    assert asked[2].requirements == (f"transformers=={T_NOW}", f"optimum=={O_NOW}", "accelerate==1.9.0")
    said = f"[+transformers] cannot be installed before optimum 1.27.0 -> {O_NOW} too (ResolutionImpossible: no)"
    assert said + "; changing them in one step" in err, err
    assert f"the upgrade step by step: [+transformers+optimum] transformers 4.48.3 -> {T_NOW}, optimum 1.27.0 -> " \
           f"{O_NOW}; [candidate] accelerate 1.9.0 -> {A_NOW}" in err  # fmt: skip
    assert "3 stacks, alternating trials" in err
    table = out[out.index("The upgrade step by step (each stack") :]
    head = [line.split() for line in table.splitlines()[1:5]]  # a step of two packages: one over the other
    assert head == [["benchmark", "transformers", "accelerate", "all", "together"], ["4.48.3", "->", T_NOW, "1.9.0",
                    "->", A_NOW], ["optimum"], ["1.27.0", "->", O_NOW]], table  # fmt: skip
    row = next(line for line in table.splitlines() if line.startswith("bs1-fp32"))
    step, accelerate, whole = _changes(row)
    assert 22 < step < 28 and abs(accelerate) < 2 and 22 < whole < 28, table
    assert row.split()[-1] == "REGRESSED" and "NOISY" not in row, table
    said = next(line for line in out.splitlines() if line.startswith("bs1-fp32 latency +2"))
    assert re.search(
        rf"regressed: came with transformers 4.48.3 -> {T_NOW}, optimum 1.27.0 -> {O_NOW} \(\+2\d\.\d%\)$", said
    )
    lost = f"bs1-bettertransformer LOST: came with transformers 4.48.3 -> {T_NOW}, optimum 1.27.0 -> {O_NOW}: needs"
    assert f"{lost} optimum<2.0" in out.splitlines(), out
    (report,) = (tmp_path / "results" / "candidate").glob("*/report.md")
    assert f"The upgrade step by step: also in {report}" in out
    text = report.read_text()
    assert "## Verdict against the pinned stack" in text  # the report as written, the section added after it
    section = text[text.index("## The upgrade step by step") :]
    assert f"| benchmark | transformers 4.48.3 -> {T_NOW}, optimum 1.27.0 -> {O_NOW} |" in re.sub(" +", " ", section)
    assert f"came with transformers 4.48.3 -> {T_NOW}, optimum 1.27.0 -> {O_NOW}" in section
    # every stack's run is kept, each under its own name, all of one session
    runs = {p.parent.parent.name: store.load(p) for p in (tmp_path / "results").glob("*/*/run.json")}
    assert set(runs) == {"pinned", "+transformers+optimum", "candidate"}
    assert len({r.schedule.session for r in runs.values()}) == 1


def test_steps_that_cancel_are_said_though_the_whole_upgrade_is_unchanged(tiny_checkpoint, tmp_path, monkeypatch,
                                                                           capsys):  # fmt: skip
    """transformers 10% slower, optimum as much faster: the two ends alone say nothing changed."""
    monkeypatch.setattr(alternate_module, "Worker", _Stack)
    _fake_stacks(monkeypatch, tmp_path)
    assert _by_package(tmp_path, {"+transformers": 1.10, "+optimum": 1.0, "candidate": 1.0}) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("bs1-fp32: not called over the whole upgrade"))
    assert re.search(
        rf"transformers 4.48.3 -> {T_NOW}: latency \+\d+\.\d% regressed; optimum 1.27.0 -> {O_NOW}: latency "
        r"-\d+\.\d% improved$",
        line,
    ), line


def test_a_stack_given_as_the_pinned_and_candidate_alike_is_refused(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    _fake_stacks(monkeypatch, tmp_path)
    argv = ["compare-stacks", "--pinned", CURRENT, "--candidate", CURRENT, "--by-package", "--venvs-dir",
            str(tmp_path), "--", "--bark-configs", "fp32"]  # fmt: skip
    assert cli.main(argv) == 2
    assert "--by-package: the pinned stack and the candidate pin the same versions" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_session_of_three_stacks_names_the_slower_step(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """Three real serving workers per invocation, one per stack (each this environment, started through a script
    named after its stack); the stack that changes optimum has its calls made 60% slower."""
    here = {p: metadata.version(p).split("+")[0] for p in ("transformers", "accelerate")}
    pinned = f"transformers=={here['transformers']} optimum==1.27.0 accelerate==1.9.0"

    def ensure_venv(spec, root, torch_requirement, progress):
        script = tmp_path / "venvs" / spec.name / "python"
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
        script.chmod(0o755)
        return script

    real = alternate_module.Worker

    def worker(python, plan, cases, *args, **kwargs):
        if Path(python).parent.name == "+optimum":
            cases = [Case(inject(c.config, "slowdown:0.6"), c.batch_size) for c in cases]
        return real(python, plan, cases, *args, **kwargs)

    monkeypatch.setattr(by_package, "ensure_venv", ensure_venv)
    monkeypatch.setattr(alternate_module, "Worker", worker)
    argv = ["compare-stacks", "--pinned", pinned, "--candidate", "current", "--by-package", "--venvs-dir",
            str(tmp_path / "venvs"), "--results-dir", str(tmp_path / "results"), "--", "--bark-configs", "fp32",
            "--bark-batch-sizes", "1", "--bark-rounds", "3", "--bark-invocations", "2", "--bark-warmup", "1",
            "--bark-device", "cpu", "--bark-no-fidelity"]  # fmt: skip
    cli.main(argv)
    out, err = capsys.readouterr()
    assert "3 stacks, alternating trials" in err, err
    assert "optimum 1.27.0 -> " in out and "accelerate 1.9.0 -> " in out, out
    table = out[out.index("The upgrade step by step (each stack") :]
    row = next(line for line in table.splitlines() if line.startswith("bs1-fp32"))
    optimum_step, accelerate_step, whole = _changes(row)
    assert optimum_step > 30 and accelerate_step < -20 and abs(whole) < 20, table


def test_this_environment_as_the_pinned_end_pins_what_it_has(tmp_path, monkeypatch):
    """`--pinned current --candidate stacks/legacy.txt` (is going back faster?): the stacks between keep this
    environment's versions of the packages not yet changed, not whatever pip would pick."""
    asked = _fake_stacks(monkeypatch, tmp_path)
    here = {p: metadata.version(p) for p in ("transformers", "optimum", "accelerate")}
    pinned = StackSpec("pinned", (), current=True)
    specs, _, labels = by_package.build(pinned, StackSpec.parse("candidate", LEGACY), None, tmp_path, TORCH, print)
    assert specs[0] is pinned and asked[0] is pinned  # measured as it is: no venv
    assert labels[0] == f"transformers {here['transformers']} -> 4.48.3"
    assert f"optimum=={here['optimum']}" in specs[1].requirements and "transformers==4.48.3" in specs[1].requirements
    assert f"accelerate=={here['accelerate']}" in specs[1].requirements and not specs[1].current


def test_the_step_that_changed_fp32_eagers_numbers_is_named():
    """The golden fingerprint's figures of each stack's fp32 eager reference against the stack's before it: the
    accelerate step scales the fine model's logits by 1% (the golden tests' injected change)."""
    from test_golden import prints

    from perf_utils.gate.compare import compare
    from perf_utils.gate.steps import judge_steps
    from perf_utils.gate.thresholds import Thresholds
    from perf_utils.record.record import RunRecord
    from perf_utils.report.steps import attribution_lines

    def stack(scale: float) -> RunRecord:
        record = RunRecord("cpu-x", "cpu", {"key": "tiny"}, {"n_tokens": 8}, {},
                           [BenchmarkResult("fp32", 1, OK, rounds=[{"latency_s": 0.3}] * 3)])  # fmt: skip
        record.reference = prints()
        fine = record.reference.submodels["fine"]
        fine.values, fine.norm = [v * scale for v in fine.values], fine.norm * scale
        return record

    chain = [stack(1.0), stack(1.0), stack(1.01)]
    labels = ["transformers 4.48.3 -> 5.24.0", "accelerate 1.9.0 -> 1.15.0"]
    steps = judge_steps(chain, labels, Thresholds())
    assert steps[0].numerics == [] and steps[1].numerics and steps[1].numerics[0].startswith("fine logits")
    lines = attribution_lines(compare(chain[0], chain[-1], Thresholds()), steps)
    assert [line for line in lines if line.startswith("numerics")] == [
        "numerics changed at accelerate 1.9.0 -> 1.15.0: " + "; ".join(steps[1].numerics)
    ]
    chain[2] = stack(1.0)
    same = attribution_lines(compare(chain[0], chain[-1], Thresholds()), judge_steps(chain, labels, Thresholds()))
    assert same == ["numerics: fp32 eager computes the same at every step (golden fingerprint)"]
    chain[1].reference = None  # the fidelity check off in one stack: neither of its steps is compared
    assert [s.numerics for s in judge_steps(chain, labels, Thresholds())] == [None, None]


def test_a_change_no_single_step_calls_is_said_to_be_the_steps_together(tiny_checkpoint, tmp_path, monkeypatch,
                                                                         capsys):  # fmt: skip
    """Each package 3% slower, under the 4% threshold alone; the whole upgrade 9% slower and regressed."""
    monkeypatch.setattr(alternate_module, "Worker", _Stack)
    _fake_stacks(monkeypatch, tmp_path)
    assert _by_package(tmp_path, {"+transformers": 1.03, "+optimum": 1.03**2, "candidate": 1.03**3}) == 1
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("bs1-fp32 latency +"))
    assert f"regressed: no single step calls it (transformers 4.48.3 -> {T_NOW} +" in line, line
    assert line.endswith("); together they make it") and "came with" not in line, line


def test_keep_runs_holds_each_stacks_folder_to_n_runs(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """`--keep-runs 1` in two sessions: each stack's folder keeps its newest run, and the session says so."""
    monkeypatch.setattr(alternate_module, "Worker", _Stack)
    _fake_stacks(monkeypatch, tmp_path)
    for _ in range(2):  # most likely in the same second: the second session's runs are kept as `...-2`
        _by_package(tmp_path, {}, extra=("--keep-runs", "1"))
    err = capsys.readouterr().err
    folders = {p.name: len(list(p.glob("*/run.json"))) for p in (tmp_path / "results").iterdir()}
    assert folders == {"pinned": 1, "+transformers": 1, "+optimum": 1, "candidate": 1}, folders
    assert "[+optimum] removed the 1 oldest kept run beyond 1 (--bark-keep-runs): 20" in err


def test_stacks_between_by_hand_find_the_release_that_made_it(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    """`--via` twice, no --by-package: transformers 4.50.0, then 5.0.0, then the rest of the upgrade in one step;
    the 5.0.0 stack is 20% slower, so the change came with transformers 4.50.0 -> 5.0.0."""
    monkeypatch.setattr(alternate_module, "Worker", _Stack)
    asked = _fake_stacks(monkeypatch, tmp_path)
    _Stack.speed, _Stack.lost_in = {"+transformers-5.0.0": 1.2, "candidate": 1.2}, ()
    argv = ["compare-stacks", "--pinned", LEGACY, "--candidate", CURRENT, "--via", "transformers==4.50.0",
            "--via", "transformers==5.0.0", "--venvs-dir", str(tmp_path / "venvs"), "--results-dir",
            str(tmp_path / "results"), "--", "--bark-configs", "fp32", "--bark-batch-sizes", "1", "--bark-rounds", "8",
            "--bark-invocations", "3", "--bark-no-fidelity"]  # fmt: skip
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert [s.name for s in asked] == ["pinned", "+transformers-4.50.0", "+transformers-5.0.0", "candidate"]
    assert asked[2].requirements == ("transformers==5.0.0", "optimum==1.27.0", "accelerate==1.9.0")
    line = next(ln for ln in out.splitlines() if ln.startswith("bs1-fp32 latency +"))
    assert "came with transformers 4.50.0 -> 5.0.0 (+" in line, line
    rest = f"transformers 5.0.0 -> {T_NOW}, optimum 1.27.0 -> {O_NOW}, accelerate 1.9.0 -> {A_NOW}"  # the last step
    section = (next((tmp_path / "results" / "candidate").glob("*/report.md"))).read_text()
    assert f"| {rest} |" in re.sub(" +", " ", section), section


def test_a_via_that_changes_nothing_is_an_error_naming_it():
    before = requirements_by_package(StackSpec.parse("pinned", LEGACY), TORCH)
    after = requirements_by_package(StackSpec.parse("candidate", CURRENT), TORCH)
    with pytest.raises(StackError, match=r"--via transformers==4.48.3: the stack before it already pins that"):
        by_package.plan(before, after, [["transformers==4.48.3"]], None, split=True)
    steps = by_package.plan(before, after, [["accelerate==1.10.0"]], None, split=True)
    assert [s.name for s in steps] == ["+accelerate-1.10.0", "+transformers", "+optimum", "+accelerate"]
    assert steps[-1].label == f"accelerate 1.10.0 -> {A_NOW}"


def test_a_run_option_it_cannot_take_is_said_before_any_stack_is_built(tmp_path, monkeypatch, capsys):
    asked = _fake_stacks(monkeypatch, tmp_path)
    argv = ["compare-stacks", "--pinned", LEGACY, "--candidate", "current", "--by-package", "--venvs-dir",
            str(tmp_path), "--", "--bark-configs", "fp32", "--results-dir", "x"]  # fmt: skip
    assert cli.main(argv) == 2 and not asked
    assert "not understood: --results-dir x" in capsys.readouterr().err
