"""Invocations forked from a preloaded zygote (`measure.forks`): each still a process of its own, run with the
caller's environment and working directory, its output and exit status reported like a fresh interpreter's."""

from __future__ import annotations

import importlib.metadata
import os

import pytest
import torch

from perf_utils.bark import configs
from perf_utils.measure import forks, worker
from perf_utils.measure.run import Case, Run, RunPlan
from perf_utils.record.metrics import HOST_ALLOC_PEAK
from perf_utils.record.record import FORKED, FRESH, OK

pytestmark = pytest.mark.skipif(not forks.available(), reason="no fork and descriptor passing on this platform")


def _timeit(code: str) -> forks.Forked:
    """`python -m timeit` runs any statement: a child that shows what it sees."""
    return forks.Forked(["-n1", "-r1", code], module="timeit")


def test_a_forked_child_sees_the_callers_environment_and_directory_of_now(tmp_path, monkeypatch):
    first = _timeit("import os; print('pid', os.getpid())")
    assert f"pid {first.pid}" in first.stdout.read()
    assert first.wait() == 0
    # Changed after the zygote started: a fork must see them as a fresh interpreter started now would.
    monkeypatch.setenv("BARK_FORK_PROBE", "seen")
    monkeypatch.chdir(tmp_path)
    child = _timeit("import os; print('env', os.environ.get('BARK_FORK_PROBE'), 'cwd', os.getcwd())")
    out = child.stdout.read()
    assert child.wait() == 0
    assert f"env seen cwd {tmp_path}" in out
    assert child.pid != os.getpid() and child.pid != first.pid


def test_a_forked_child_reports_its_failure_and_its_kill(tmp_path):
    failing = _timeit("raise ValueError('boom from the child')")
    out = failing.stdout.read()
    assert failing.wait() == 1 and "ValueError: boom from the child" in out
    sleeper = _timeit("import time; time.sleep(120)")
    assert sleeper.poll() is None
    sleeper.kill()
    assert sleeper.wait() == -9


def test_a_plain_cpu_invocation_is_forked_and_says_so(tiny_checkpoint):
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=1, warmup=0, invocations=2)
    assert worker.forked(plan)
    assert not worker.forked(RunPlan(tiny_checkpoint, torch.device("meta"), 8, 1, 0, invocations=2))
    run = Run(plan, check_fidelity=False)
    record = run.measure_all([Case(configs.get("fp32"), 1)])
    [result] = record.results
    assert result.status == OK and result.invocations == [0, 1]
    assert record.schedule is not None and record.schedule.workers == FORKED
    # each forked invocation counted its host allocations once, after its round: the same count in both
    [first, second] = result.groups(HOST_ALLOC_PEAK)
    assert len(first) == len(second) == 1 and first[0] > 1 and abs(first[0] - second[0]) < 0.05, (first, second)
    assert record.environment["packages"]["memray"] == importlib.metadata.version("memray")


def test_without_a_zygote_the_invocation_starts_a_fresh_interpreter(tiny_checkpoint, monkeypatch):
    def no_zygote(argv: list[str], module: str = "") -> forks.Forked:
        raise OSError("no zygote here")

    monkeypatch.setattr(forks, "Forked", no_zygote)
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=1, warmup=0, invocations=2)
    ghost = configs.OptimizationConfig("not_registered", "only in this process")
    lines: list[str] = []
    done = worker.invoke(plan, [Case(ghost, 1)], 0, False, lines.append)
    assert done.started == FRESH
    assert any("forking a worker failed (no zygote here); starting a fresh interpreter" in ln for ln in lines)
    [result] = done.results  # the fresh interpreter ran it: its own error, not the zygote's
    assert "unknown configuration 'not_registered'" in (result.reason or "")
