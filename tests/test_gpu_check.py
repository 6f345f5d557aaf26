"""The one-command GPU check, prepared on the CPU: its steps fit the time a lent GPU has, a step that overruns is
killed with its worker processes, and the blog's figures are set beside a run's."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from perf_utils import cli
from perf_utils.record.ratios import add_ratios
from perf_utils.record.record import BenchmarkResult, RunRecord
from perf_utils.report.blog import CLAIMS, claims_table, measured
from perf_utils.tools import gpu_check


def test_the_steps_fit_in_eight_minutes_in_order_of_value(tmp_path, capsys):
    assert cli.main(["gpu-check", "--dry-run", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [ln.split(" ")[0] for ln in lines[:5]]
    assert names == ["offload-bare", "tiny-matrix", "bark-shapes", "offload-bare-legacy", "legacy-bettertransformer"]
    assert "perf_utils.tools.bare_call" in lines[0] and "--bark-checkpoint random:bark" in lines[2]
    assert "skipped: no --legacy-path" in lines[3] and "skipped: no --legacy-path" in lines[4]
    assert sum(s.timeout_s for s in gpu_check.STEPS) < 8 * 60


def test_the_legacy_step_runs_with_the_legacy_stack_first_on_the_path(tmp_path):
    legacy = tmp_path / "legacy-site"
    [*_, (step, cmd, env)] = gpu_check.commands(tmp_path, legacy)
    assert step.legacy and cmd is not None and "bettertransformer" in " ".join(cmd)
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(legacy)


def test_a_step_that_overruns_is_killed_with_its_children(tmp_path):
    pid_file = tmp_path / "child.pid"
    code = ("import subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            f"open({str(pid_file)!r}, 'w').write(str(p.pid))\ntime.sleep(60)\n")  # fmt: skip
    started = time.monotonic()
    with (tmp_path / "log").open("w") as log:
        assert gpu_check._run_limited([sys.executable, "-c", code], log, dict(os.environ), timeout_s=3) is None
    assert time.monotonic() - started < 30
    child = int(pid_file.read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_each_step_says_how_long_it_took_so_the_limits_can_be_sized(tmp_path, monkeypatch):
    steps = (gpu_check.Step("quick", "exits at once", ("json.tool", "--help"), 20, benchmarks=False),
             gpu_check.Step("stuck", "outruns its limit", ("timeit", "-n1", "import time; time.sleep(60)"), 1,
                            benchmarks=False))  # fmt: skip
    monkeypatch.setattr(gpu_check, "STEPS", steps)
    said: list[str] = []
    assert gpu_check.run(tmp_path, None, said.append) == 1  # the step that timed out counts as failed
    assert any(line.startswith("quick: exit 0 after ") and line.endswith("s") for line in said), said
    assert "stuck: timed out after 1s" in said, said
    assert (tmp_path / "stuck.log").read_text().startswith(sys.executable)  # its log kept what it was


def _record() -> RunRecord:
    def result(config: str, bs: int, latency: float, peak: float) -> BenchmarkResult:
        rounds = [{"latency_s": latency * f, "throughput_sps": bs / (latency * f), "accel_peak_mb": peak}
                  for f in (0.99, 1.0, 1.01)]  # fmt: skip
        return BenchmarkResult(config, bs, "ok", rounds=rounds)

    results = [result("fp32", 1, 4.0, 1000), result("bettertransformer", 1, 3.0, 1000),
               result("fp32", 8, 6.0, 2000), result("fp16", 8, 3.0, 1000)]  # fmt: skip
    record = RunRecord("h200", "cuda:0", {"key": "random:bark", "kind": "random"}, {}, {}, results)
    add_ratios(record)
    return record


def test_the_blog_figures_stand_beside_the_measured_ones():
    record = _record()
    got = {(c.config, c.batch_size, c.what): measured(record, c) for c in CLAIMS}
    assert round(got[("bettertransformer", 1, "latency")], 3) == -0.25
    assert round(got[("fp16", 8, "peak memory")], 3) == -0.5
    assert round(got[("fp16", 8, "throughput")], 3) == 1.0
    assert got[("cpu_offload", 1, "peak memory")] is None  # not measured: said, not invented
    table = claims_table(record)
    assert "| bs1-bettertransformer | latency" in table and "-27%" in table and "-25%" in table
    assert "this run (random:bark)" in table
