"""Running the real `pytest benchmarks` suite in a subprocess, as a user would, with everything under a tmp dir."""

import os
import subprocess
import sys
from pathlib import Path

from perf_utils.stack import current_stack, hardware_key

ROOT = Path(__file__).resolve().parents[1]
HARDWARE = hardware_key(current_stack(), "cpu")
FAST = ["--bark-tokens", "16", "--bark-device", "cpu"]


def bench(
    tmp: Path, *args: str, fault: str | None = None, fault_configs: str = "baseline", popen: bool = False, **extra_env
):
    """Run `pytest benchmarks` with baselines and results under `tmp`."""
    env = dict(os.environ, **extra_env)
    if "GITHUB_STEP_SUMMARY" not in extra_env:
        env.pop("GITHUB_STEP_SUMMARY", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    env.pop("BARK_PERF_FAULT", None)
    if fault:
        env["BARK_PERF_FAULT"], env["BARK_PERF_FAULT_CONFIGS"] = fault, fault_configs
    cmd = [
        sys.executable, "-m", "pytest", "benchmarks", "-p", "fault_plugin", "-p", "no:cacheprovider",
        "--bark-baselines-dir", str(tmp / "baselines"), "--bark-results-dir", str(tmp / "results"),
        "--benchmark-storage", f"file://{tmp / 'benchmark-storage'}", *FAST, *args,
    ]  # fmt: skip
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def out(proc) -> str:
    return proc.stdout + proc.stderr


def row(output: str, bench_id: str) -> str:
    """The verdict-table row of one benchmark."""
    lines = [ln for ln in output.splitlines() if ln.startswith(bench_id + " ")]
    assert lines, f"no verdict row for {bench_id} in:\n{output}"
    return lines[-1]
