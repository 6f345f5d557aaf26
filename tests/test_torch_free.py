"""`merge` and `gate` only read JSON: they run where torch (and transformers) cannot be imported, as in the
nightly's verdict job, which installs requirements/gate.txt alone. Synthetic records, no model."""

import os
import subprocess
import sys
from pathlib import Path

from perf_utils.record.record import BenchmarkResult, RunRecord, Schedule
from perf_utils.record.store import write_atomic

BLOCKED = ("torch", "transformers")
WORKLOAD = {"n_tokens": 32, "prompts_sha256": "0" * 64, "seed": 0, "sampling": {"do_sample": False}}
SPREAD = (0.98, 1.0, 1.02, 0.99, 1.01)


def result(config: str, bs: int, scale: float = 1.0) -> BenchmarkResult:
    rounds = [{"latency_s": x * scale, "host_peak_mb": 100.0, "throughput_sps": bs / (x * scale)} for x in SPREAD]
    return BenchmarkResult(config, bs, "ok", None, rounds, {"semantic_tokens": 32})


def record(*results: BenchmarkResult) -> RunRecord:
    return RunRecord("hw-test", "cpu", {"key": "tiny", "kind": "tiny"}, WORKLOAD, {}, list(results))


def no_torch_env(tmp_path: Path) -> dict[str, str]:
    """PYTHONPATH starts with packages named torch and transformers whose import fails."""
    blocker = tmp_path / "blocker"
    for name in BLOCKED:
        (blocker / name).mkdir(parents=True)
        (blocker / name / "__init__.py").write_text(f'raise ImportError("{name} blocked by the test")\n')
    env = dict(os.environ)
    env.pop("GITHUB_STEP_SUMMARY", None)
    env["PYTHONPATH"] = os.pathsep.join([str(blocker), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )  # fmt: skip


def test_the_blocker_blocks(tmp_path):
    proc = run(["-c", "import torch"], no_torch_env(tmp_path), tmp_path)
    assert proc.returncode != 0 and "blocked by the test" in proc.stderr


def test_the_gate_side_imports_no_torch(tmp_path):
    modules = ["perf_utils.cli", "perf_utils.finish", "perf_utils.gate.trends", "perf_utils.report.markdown",
               "perf_utils.record.store"]  # fmt: skip
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nassert 'torch' not in sys.modules, 'torch imported'\n"
    proc = run(["-c", code], dict(os.environ), tmp_path)  # torch importable: it must still not be imported
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_merge_and_gate_without_torch(tmp_path):
    env = no_torch_env(tmp_path)
    write_atomic(tmp_path / "shard1.json", record(result("fp32", 1), result("fp32", 8)))
    write_atomic(tmp_path / "shard2.json", record(result("fp16", 1), result("fp16", 8)))
    write_atomic(tmp_path / "base.json", record(*(result(c, bs) for c in ("fp32", "fp16") for bs in (1, 8))))

    merged = run(["-m", "perf_utils", "merge", "merged.json", "shard1.json", "shard2.json"], env, tmp_path)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    assert "merged 2 shards (4 benchmarks)" in merged.stdout

    gate = ["-m", "perf_utils", "gate", "merged.json", "--report", "rep", "--history", "hist"]
    passed = run([*gate, "--baseline", "base.json"], env, tmp_path)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "bark gate passed" in passed.stdout, passed.stdout
    assert (tmp_path / "rep" / "report.md").is_file()

    # A baseline 3x faster on one benchmark: the same run now regressed.
    rest = (result(c, bs) for c, bs in (("fp32", 8), ("fp16", 1), ("fp16", 8)))
    faster = record(result("fp32", 1, scale=1 / 3), *rest)
    write_atomic(tmp_path / "fast.json", faster)
    failed = run([*gate, "--baseline", "fast.json"], env, tmp_path)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "REGRESSED" in failed.stdout, failed.stdout
    assert "blocked by the test" not in merged.stderr + passed.stderr + failed.stderr


def test_a_nightly_with_a_shard_missing_merges_and_gates_as_interrupted(tmp_path):
    """The verdict job when one shard's job died before uploading its run: merged with a line that says which,
    then judged as interrupted (the gate fails, nothing adopted), the benchmarks of the missing shard `not run`."""
    env = no_torch_env(tmp_path)
    shard1 = record(result("fp32", 1), result("fp16", 1))
    shard1.schedule = Schedule(invocations=3, shard="1/2")
    write_atomic(tmp_path / "shard1.json", shard1)
    write_atomic(tmp_path / "base.json", record(*(result(c, 1) for c in ("fp32", "fp16", "bf16"))))
    merged = run(["-m", "perf_utils", "merge", "merged.json", "shard1.json"], env, tmp_path)
    assert merged.returncode == 0, merged.stdout + merged.stderr
    missing = "shard 2/2 missing: no run of it was given to merge (did its job fail before keeping one?)"
    assert f"merged 1 shard (2 benchmarks) into merged.json\nINTERRUPTED: {missing}\n" in merged.stdout
    gate = run(["-m", "perf_utils", "gate", "merged.json", "--baseline", "base.json"], env, tmp_path)
    assert gate.returncode == 1, gate.stdout + gate.stderr  # failed: the run lacks a part
    assert f"INTERRUPTED ({missing})" in gate.stdout
    assert "not run, the run was cut short before it measured this: bf16" in gate.stdout, gate.stdout
