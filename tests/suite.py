"""Running the real `pytest benchmarks` suite in a subprocess, as a user would, with everything under a tmp dir."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from perf_utils.bark.environment import current_stack, hardware_key

ROOT = Path(__file__).resolve().parents[1]
HARDWARE = hardware_key(current_stack(), "cpu")
FAST = ["--bark-tokens", "16", "--bark-device", "cpu", "--bark-invocations", "1"]


def bench(
    tmp: Path,
    *args: str,
    fault: str | None = None,
    fault_configs: str = "fp32",
    numerics: str | None = None,
    popen: bool = False,
    **extra_env,
):
    """Run `pytest benchmarks` with baselines, golden fingerprints and results under `tmp`; `numerics`
    (`fine:1.01`) scales a sub-model's logits in every model instance, the fidelity reference's too."""
    env = dict(os.environ, **extra_env)
    if "GITHUB_STEP_SUMMARY" not in extra_env:
        env.pop("GITHUB_STEP_SUMMARY", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env.pop("BARK_PERF_FAULT", None)
    env.pop("BARK_PERF_NUMERICS", None)
    if numerics:
        env["BARK_PERF_NUMERICS"] = numerics
    if fault:
        env["BARK_PERF_FAULT"], env["BARK_PERF_FAULT_CONFIGS"] = fault, fault_configs
    cmd = [
        sys.executable, "-m", "pytest", "benchmarks", "-p", "fault_plugin", "-p", "no:cacheprovider",
        "--bark-baselines-dir", str(tmp / "baselines"), "--bark-results-dir", str(tmp / "results"),
        "--bark-golden-dir", str(tmp / "golden"),
        "--benchmark-storage", f"file://{tmp / 'benchmark-storage'}", *FAST, *args,
    ]  # fmt: skip
    if popen:
        # The default SIGINT handler, whatever this test run was started with: a background job of a
        # non-interactive shell ignores SIGINT, its children inherit that, and a test that interrupts one would
        # see it finish normally.
        def default_sigint() -> None:
            signal.signal(signal.SIGINT, signal.SIG_DFL)

        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=default_sigint,
        )  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def out(proc) -> str:
    return proc.stdout + proc.stderr


def row(output: str, bench_id: str) -> str:
    """The verdict-table row of one benchmark."""
    lines = [ln for ln in output.splitlines() if ln.startswith(bench_id + " ")]
    assert lines, f"no verdict row for {bench_id} in:\n{output}"
    return lines[-1]


def without_drift(tmp: Path) -> Path:
    """The project's pyproject.toml with the CPU's drift taken out, for tests of a decision the drift would only
    turn `noisy` (`drift` itself: tests/test_compare.py, test_remeasure.py)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "\ndrift = 0.05\n" in text, "the CPU's drift setting moved: update without_drift"
    path = tmp / "pyproject-without-drift.toml"
    path.write_text(text.replace("\ndrift = 0.05\n", "\ndrift = 0\n"), encoding="utf-8")
    return path


def baseline_file(tmp: Path) -> Path:
    from perf_utils.record import store

    return store.path_for(tmp / "baselines", HARDWARE, "tiny")


def healthy_run(tmp: Path) -> SimpleNamespace:
    """A baseline of bs1 and bs8 `fp32` and the golden fingerprint, adopted from a clean real run (and
    pytest-benchmark's own storage)."""
    from perf_utils.record import store

    proc = bench(tmp, "--bark-configs", "fp32", "--bark-save-baseline", "--bark-save-golden", "--benchmark-autosave")
    assert proc.returncode == 0, out(proc)
    assert "baseline created" in proc.stdout and "golden fingerprint created" in proc.stdout
    [kept] = (tmp / "results").glob("*/run.json")
    return SimpleNamespace(tmp=tmp, output=out(proc), record=store.load(kept), baseline=baseline_file(tmp))


def regressed_run(healthy: SimpleNamespace, tmp: Path) -> SimpleNamespace:
    """Against a copy of the healthy baseline: `fp32`'s coarse stage got 7x slower (the call about 4x) and `bf16` is
    new, compared in CI style, with pytest-benchmark's own gate beside ours and progress shown."""
    from perf_utils.record import store

    shutil.copytree(healthy.tmp / "baselines", tmp / "baselines")
    shutil.copytree(healthy.tmp / "golden", tmp / "golden")
    shutil.copytree(healthy.tmp / "benchmark-storage", tmp / "benchmark-storage")
    shutil.copytree(healthy.tmp / "results", tmp / "results")  # the healthy run is this one's history
    summary = tmp / "job-summary.md"
    proc = bench(tmp, "--bark-configs", "fp32,bf16", "--benchmark-compare", "--benchmark-compare-fail=median:100%",
                 "-v", fault="slowdown:6:coarse", GITHUB_STEP_SUMMARY=str(summary))  # fmt: skip
    folder = max((tmp / "results").glob("*/run.json")).parent
    return SimpleNamespace(
        proc=proc,
        folder=folder,
        output=out(proc),
        markdown=(folder / "report.md").read_text(),
        summary=summary.read_text(),
        record=store.load(folder / "run.json"),
    )
