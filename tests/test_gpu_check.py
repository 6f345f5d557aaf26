"""The one-command GPU check, prepared on the CPU: its steps fit the time a lent GPU has, a step that overruns is
killed with its worker processes, and the blog's figures are set beside a run's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from perf_utils import cli
from perf_utils.record.ratios import add_ratios
from perf_utils.record.record import BenchmarkResult, RunRecord
from perf_utils.report.blog import CLAIMS, batching_table, claims_table, measured
from perf_utils.tools import gpu_check
from perf_utils.tools.gpu_check import CheckStep


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
    """Even one deaf to the interrupt before its limit (both processes ignore SIGINT) ends at the limit."""
    pid_file = tmp_path / "child.pid"
    deaf = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    code = (f"{deaf}import subprocess, sys, time\n"
            f"p = subprocess.Popen([sys.executable, '-c', {deaf + 'import time; time.sleep(60)'!r}])\n"
            f"open({str(pid_file)!r}, 'w').write(str(p.pid))\ntime.sleep(60)\n")  # fmt: skip
    started = time.monotonic()
    with (tmp_path / "log").open("w") as log:
        cmd = [sys.executable, "-c", code]
        assert gpu_check._run_limited(cmd, log, dict(os.environ), timeout_s=4, grace_s=2) is None
    assert 4 <= time.monotonic() - started < 30
    child = int(pid_file.read_text())
    time.sleep(0.5)
    assert not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]


def test_a_step_at_its_limit_is_interrupted_first_so_it_keeps_what_it_measured(tmp_path):
    """The grace before the limit: the step gets Ctrl-C's KeyboardInterrupt (a benchmark run then writes its
    record with the rounds so far), even when this check itself was started with SIGINT ignored, as a background
    job of a non-interactive shell (a remote runner) is."""
    kept = tmp_path / "kept"
    code = "import time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
    code += f"    open({str(kept)!r}, 'w').write('rounds')\n"
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with (tmp_path / "log").open("w") as log:
            cmd = [sys.executable, "-c", code]
            assert gpu_check._run_limited(cmd, log, dict(os.environ), timeout_s=30, grace_s=25) is None
    finally:
        signal.signal(signal.SIGINT, previous)
    assert kept.read_text() == "rounds"


def test_each_step_says_how_long_it_took_so_the_limits_can_be_sized(tmp_path, monkeypatch):
    steps = (CheckStep("quick", "exits at once", ("json.tool", "--help"), 2, benchmarks=False),
             CheckStep("stuck", "outruns its limit", ("timeit", "-n1", "import time; time.sleep(60)"), 1,
                       benchmarks=False))  # fmt: skip
    monkeypatch.setattr(gpu_check, "STEPS", steps)
    said: list[str] = []
    assert gpu_check.run(tmp_path, None, said.append) == 1  # the step that timed out counts as failed
    assert any(line.startswith("quick: exit 0 after ") and line.endswith("s") for line in said), said
    limit = next(line for line in said if line.startswith("stuck (at most "))[len("stuck (at most ") :].split("s")[0]
    assert f"stuck: timed out after {limit}s" in said, said  # its own 1 s and what the quick step left
    assert (tmp_path / "stuck.log").read_text().startswith(sys.executable)  # its log kept what it was


def test_the_time_a_step_leaves_unused_goes_to_the_next(tmp_path, monkeypatch):
    """A quick step's unused limit is added to the next step's, so a step that needs more than its estimate (the
    bark-shaped one) can still finish, and the whole check stays within the sum of the limits."""
    steps = (CheckStep("quick", "exits at once", ("json.tool", "--help"), 8, benchmarks=False),
             CheckStep("slow", "needs 3 s of its 2", ("timeit", "-n1", "-r1", "import time; time.sleep(3)"), 2,
                       benchmarks=False))  # fmt: skip
    monkeypatch.setattr(gpu_check, "STEPS", steps)
    said: list[str] = []
    assert gpu_check.run(tmp_path, None, said.append) == 0, said
    announced = next(line for line in said if line.startswith("slow (at most "))
    limit, left = (int(part.split("s")[0]) for part in announced[len("slow (at most ") :].split(": 2s and "))
    assert limit == 2 + left and 5 <= left <= 8, announced
    assert any(line.startswith("slow: exit 0 after 3s") for line in said), said


def test_no_step_reaches_past_the_time_the_machine_has_left(tmp_path, monkeypatch):
    """`--within`: what a lent machine has left caps every step's limit; a step with no time left is skipped."""
    steps = (CheckStep("stuck", "outruns the time left", ("timeit", "-n1", "-r1", "import time; time.sleep(60)"),
                       30, benchmarks=False),
             CheckStep("after", "no time left for it", ("json.tool", "--help"), 30, benchmarks=False))  # fmt: skip
    monkeypatch.setattr(gpu_check, "STEPS", steps)
    said: list[str] = []
    started = time.monotonic()
    assert gpu_check.run(tmp_path, None, said.append, within_s=2) == 2
    assert time.monotonic() - started < 15
    limit = int(said[0][len("stuck (at most ") :].split("s")[0])
    assert limit in (1, 2) and f"stuck: timed out after {limit}s" in said, said
    assert "after: skipped (no time left)" in said, said


def test_the_extra_after_the_check_is_the_batching_sweep_on_bark_shapes(tmp_path, capsys):
    assert cli.main(["gpu-check", "--extra", "--dry-run", "--out", str(tmp_path)]) == 0
    [plan, total] = capsys.readouterr().out.splitlines()
    assert plan.startswith("batching (at most ") and "--bark-checkpoint random:bark" in plan
    assert "--bark-batch-sizes 1,8,16,32,64" in plan and total.startswith("at most ")


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


def test_a_benchmark_step_cut_at_its_limit_still_shows_and_keeps_its_record(tmp_path, monkeypatch):
    """A stand-in for `pytest benchmarks` that, interrupted, keeps its record where a run keeps it: the check
    copies it beside the step's log, prints the blog's table from it, and says the step was cut but kept it."""
    from perf_utils.record import store

    ready, record = tmp_path / "ready.json", _record()
    record.workload = {"n_tokens": 32, "prompts_sha256": "p", "seed": 0, "sampling": {}}
    store.write_atomic(ready, record)
    kept = tmp_path / "out" / "bark-shapes" / "results" / "run-1" / "run.json"
    code = ("import os, shutil, time\ntry:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n"
            f"    os.makedirs({str(kept.parent)!r})\n    shutil.copy({str(ready)!r}, {str(kept)!r})\n")  # fmt: skip
    step = CheckStep("bark-shapes", "cut short", (), gpu_check.GRACE_S + 3)  # interrupted after 3 s
    monkeypatch.setattr(gpu_check, "commands", lambda out, legacy, steps: [(step, [sys.executable, "-c", code], {})])
    said: list[str] = []
    assert gpu_check.run(tmp_path / "out", None, said.append) == 1
    assert store.load(tmp_path / "out" / "bark-shapes.json").results == _record().results
    assert any("bs1-bettertransformer" in line and "-25%" in line for line in said), said
    assert said[-1].startswith("bark-shapes: timed out after ")
    assert said[-1].endswith("(interrupted first: bark-shapes.json keeps the rounds it measured)"), said[-1]


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


def _session(tmp_path: Path, wheels: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """`.ci/gpu-session` as the device tool runs it, made to plan only (gpu-check --dry-run, no gate-quality)."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "WHEELS": str(wheels), "TARGET": str(tmp_path / "target"),
           "QUALITY": "0", "GPU_CHECK_ARGS": "--dry-run",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra}  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    return subprocess.run(["bash", str(root / ".ci" / "gpu-session")], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip


def test_the_device_session_script_plans_the_check_and_says_what_it_lacks(tmp_path):
    """The one device call's script, tried on the CPU: without wheels it runs with the machine's own packages and
    says so, and with no legacy stack the legacy steps are skipped; with a wheel folder missing a part it stops
    before spending device time. What it fetches is tried by running `.ci/gpu-wheels` (network), not here."""
    done = _session(tmp_path, tmp_path / "no-wheels")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no-wheels here: the machine's own packages only, no legacy stack" in done.stdout
    limits = {step.name: step.timeout_s for step in gpu_check.STEPS}
    assert f"tiny-matrix (at most {limits['tiny-matrix']}s)" in done.stdout
    assert f"offload-bare-legacy (at most {limits['offload-bare-legacy']}s): skipped" in done.stdout
    assert "gate-quality: not run" in done.stdout and (tmp_path / "out" / "gc").is_dir()
    assert "gpu-check --extra: " in done.stdout and "batching (at most " in done.stdout  # the time left: the sweep
    broken = _session(tmp_path, tmp_path / "no-wheels", PATH="/usr/bin:/bin")  # a Python without the suite's
    assert broken.returncode != 0 and "gpu-check: exit " in broken.stdout  # packages: the call says it failed
    (tmp_path / "partial" / "site").mkdir(parents=True)
    done = _session(tmp_path, tmp_path / "partial")
    assert done.returncode == 3 and "partial/site: no wheels: run bash .ci/gpu-wheels" in done.stdout


def test_the_device_session_brings_back_at_most_eight_files(tmp_path):
    """The device tool returns at most 8 files from $OUT: every step's log and record of a whole check, the sweep
    included, must fit, the two short bare calls' logs in one."""
    check = tmp_path / "check"
    check.mkdir()
    steps = [*gpu_check.STEPS, *gpu_check.EXTRA]
    for step in steps:
        (check / f"{step.name}.log").write_text(f"{step.name} ran\n")
        if step.benchmarks:
            (check / f"{step.name}.json").write_text("{}")
    done = _session(tmp_path, tmp_path / "no-wheels", CHECK_DIR=str(check))
    assert done.returncode == 0, done.stdout + done.stderr
    back = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert len(back) <= 8, back
    assert "offload-bare ran" in (tmp_path / "out" / "gc" / "bare.log").read_text()
    assert "offload-bare-legacy ran" in (tmp_path / "out" / "gc" / "bare.log").read_text()
    for name in ("bark-shapes", "legacy-bettertransformer", "batching"):  # the records the README cites
        assert f"gc/{name}.json" in back and f"gc/{name}.log" in back, back


def _wheel(folder: Path, name: str) -> None:
    """A minimal wheel that pip installs offline (an empty package)."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-0.0.0.dist-info"
    files = {
        f"{name}/__init__.py": "",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{name}-0.0.0-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)


def test_the_device_session_goes_on_without_the_legacy_stack_when_its_wheels_fail(tmp_path):
    """Only the suite's own wheels (site) are needed: a legacy or accelerate 1.9 folder that is missing or does not
    install costs its steps, said, not the device call."""
    wheels = tmp_path / "wheels"
    _wheel(wheels / "site", "bark_site_stub")
    _wheel(wheels / "acc19", "bark_acc_stub")
    (wheels / "legacy").mkdir()
    done = _session(tmp_path, wheels)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        "wheels/legacy: no wheels: run bash .ci/gpu-wheels" in done.stdout and "legacy: no legacy stack" in done.stdout
    )
    assert (tmp_path / "target" / "site" / "bark_site_stub").is_dir()  # installed where PYTHONPATH points
    assert (tmp_path / "target" / "acc19" / "bark_acc_stub").is_dir()
    limits = {step.name: step.timeout_s for step in gpu_check.STEPS}
    assert f"offload-bare-legacy (at most {limits['offload-bare-legacy']}s): skipped" in done.stdout


def test_the_batching_sweep_says_where_a_larger_batch_stops_paying():
    """Each configuration's median throughput per batch size and its gain on the batch size before: where the gain
    falls towards 0%, batching stops paying. A batch size a configuration did not measure reads '-', not a guess."""

    def result(config: str, bs: int, latency: float) -> BenchmarkResult:
        return BenchmarkResult(config, bs, "ok", rounds=[{"latency_s": latency, "throughput_sps": bs / latency}])

    results = [result("fp16", 1, 2.0), result("fp16", 8, 2.0), result("fp16", 16, 4.0), result("fp32", 8, 4.0)]
    record = RunRecord("h200", "cuda:0", {"key": "random:bark", "kind": "random"}, {}, {}, results)
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in batching_table(record).splitlines()[2:]}  # fmt: skip
    assert rows["fp16"] == ["0.50", "4.00 (+700%)", "4.00 (+0%)"]  # batch 16 costs twice batch 8: no gain
    assert rows["fp32"] == ["-", "2.00", "-"]
    assert batching_table(RunRecord("h200", "cuda:0", {"key": "tiny"}, {}, {}, results[:1])) == ""
