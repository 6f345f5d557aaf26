"""The GitHub Actions workflows validate against the published workflow schema (check-jsonschema's vendored
copy, so no network), and run the commands a person runs locally."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))


def check(*paths: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema is not installed (pip install -e '.[dev]')")
    cmd = [exe, "--builtin-schema", "vendor.github-workflows", *map(str, paths)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_the_three_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"ci.yml", "nightly-gpu.yml", "upgrade-gate.yml"}


def test_workflows_validate_against_the_schema():
    proc = check(*WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_validator_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("name: x\non: push\njobs:\n  a:\n    steps:\n      - run: echo hi\n    runs-onn: ubuntu-latest\n")
    assert check(broken).returncode != 0


def steps(workflow: str, job: str) -> list[str]:
    """The shell commands of one job, parsed from the YAML (not grepped: a command in a comment or in another job
    does not count)."""
    data = yaml.safe_load((ROOT / ".github" / "workflows" / workflow).read_text())
    return [step["run"] for step in data["jobs"][job]["steps"] if "run" in step]


def uses(workflow: str, job: str) -> list[str]:
    data = yaml.safe_load((ROOT / ".github" / "workflows" / workflow).read_text())
    return [step["uses"] for step in data["jobs"][job]["steps"] if "uses" in step]


def test_ci_runs_the_readme_setup_and_test_command():
    ci = "\n".join(steps("ci.yml", "test"))
    readme = (ROOT / "README.md").read_text()
    for command in ('pip install -e ".[dev]"', "pytest tests", "ruff check .", "ruff format --check ."):
        assert command in ci, command
    assert 'pip install -e ".[dev]"' in readme and "pytest tests" in readme


def test_nightly_shards_measure_and_the_verdict_job_needs_no_torch():
    shard = "\n".join(steps("nightly-gpu.yml", "shard"))
    assert "pytest benchmarks" in shard and "--bark-shard ${{ matrix.shard }}/${{ env.SHARDS }}" in shard
    verdict = "\n".join(steps("nightly-gpu.yml", "verdict"))
    assert "python -m perf_utils merge" in verdict and "python -m perf_utils gate" in verdict
    assert "--history history/" in verdict  # the nightly keeps its runs ...
    assert "--keep-runs 365" in verdict  # ... a year of them, so the cache entry stops growing ...
    assert "actions/cache/save@v4" in uses("nightly-gpu.yml", "verdict")  # ... across nights
    assert "pip install -r requirements/gate.txt" in verdict and "--no-deps" in verdict
    assert "torch" not in verdict  # judging saved records installs no torch


def test_every_measuring_step_hands_the_runners_interrupt_to_the_suite():
    """At a timeout or cancel the runner sends SIGINT to the step's shell only; a shell waiting on pytest would
    swallow it and the run's measurements be lost. `exec` makes the suite the step's process."""
    found = 0
    for workflow in ("ci.yml", "nightly-gpu.yml", "upgrade-gate.yml"):
        data = yaml.safe_load((ROOT / ".github" / "workflows" / workflow).read_text())
        for job in data["jobs"]:
            for run in steps(workflow, job):
                for command in ("pytest benchmarks", "python -m perf_utils compare-stacks"):
                    if command in run:
                        found += 1
                        assert f"exec {command}" in run, f"{workflow} {job}: {run}"
    assert found == 8


@pytest.mark.parametrize(
    ("workflow", "job", "gate_id", "results"),
    [
        ("upgrade-gate.yml", "compare-stacks", "gate", "results/"),
        ("nightly-gpu.yml", "shard", "paired", "shard-results/"),
    ],
)
def test_a_failed_stack_gate_is_measured_again_package_by_package(workflow, job, gate_id, results):
    """Only after the paired gate itself failed (not a failed install), into a folder of its own that is uploaded."""
    data = yaml.safe_load((ROOT / ".github" / "workflows" / workflow).read_text())
    job_steps = data["jobs"][job]["steps"]
    gate = next(step for step in job_steps if step.get("id") == gate_id)
    assert "python -m perf_utils compare-stacks" in gate["run"] and "--by-package" not in gate["run"]
    which = next(step for step in job_steps if "--by-package" in step.get("run", ""))
    assert which["if"] == f"failure() && steps.{gate_id}.outcome == 'failure'"
    assert f"--results-dir {results}by-package" in which["run"]
    for option in ("--pinned", "--candidate", "--venvs-dir", '-- --bark-checkpoint "$BARK_PERF_CHECKPOINT"'):
        assert option in which["run"], option
    uploaded = next(step for step in job_steps if "upload-artifact" in step.get("uses", ""))["with"]["path"]
    assert {results, f"{results}by-package/"} & {line.strip() for line in uploaded.splitlines()}, uploaded


def test_the_medium_cpu_lane_runs_the_real_shapes_nightly():
    data = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert "schedule" in data[True] or "schedule" in data.get("on", {})  # YAML reads `on:` as True
    lane = "\n".join(steps("ci.yml", "medium-cpu"))
    assert "pytest benchmarks --bark-checkpoint random:bark-small" in lane and "--bark-tokens 8" in lane
    assert "torch==2.13.0" in lane  # the CPU wheel, as everywhere


def test_the_steady_cpu_lane_gates_against_its_own_baselines_nightly():
    """The lane whose settings gate-quality measured (README, "A steady CPU lane"): all of them, or it is not it."""
    lane = "\n".join(steps("ci.yml", "steady-cpu"))
    settings = [
        "--benchmark-compare",
        "--bark-batch-sizes 1",
        "--bark-threads 1",
        "--bark-rounds 6",
        "--bark-invocations 6",
        "--bark-time-threshold 0.07",
        "--bark-baselines-dir baselines/steady",
    ]
    for setting in settings:
        assert setting in lane, setting
    assert "torch==2.13.0" in lane
    assert list((ROOT / "baselines" / "steady").glob("*/tiny.json")), "the lane's baseline for this machine kind"


def test_both_gpu_workflows_fall_back_to_the_real_shapes_without_the_hub():
    """Each picks its checkpoint with `.ci/checkpoint` (one definition of the fallback) and measures what it picked;
    the upgrade gate's `hf download` failed the job on a runner without the Hub before."""
    nightly = "\n".join(steps("nightly-gpu.yml", "shard"))
    assert "bash .ci/checkpoint ${{ matrix.checkpoint.id }}" in nightly
    assert '--bark-checkpoint "$BARK_PERF_CHECKPOINT"' in nightly
    upgrade = "\n".join(steps("upgrade-gate.yml", "compare-stacks"))
    assert "bash .ci/checkpoint \"${{ inputs.checkpoint || 'suno/bark-small' }}\"" in upgrade
    assert '-- --bark-checkpoint "$BARK_PERF_CHECKPOINT"' in upgrade and "hf download" not in upgrade


def pick_checkpoint(tmp_path: Path, checkpoint: str, hub: bool) -> tuple[str, str]:
    """Run `.ci/checkpoint` as a job step does, with an `hf` that succeeds or fails and an empty Hub cache; returns
    its output and what it added to $GITHUB_ENV."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "hf").write_text(f"#!/bin/sh\nexit {0 if hub else 1}\n")
    (bin_dir / "hf").chmod(0o755)
    env_file = tmp_path / "github_env"
    env_file.write_text("")
    python_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:{python_dir}:/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"),
           "GITHUB_ENV": str(env_file)}  # fmt: skip
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "checkpoint"), checkpoint], capture_output=True, text=True,
                          env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, env_file.read_text()


@pytest.mark.parametrize("slug", ["bark-small", "bark"])
def test_a_hub_checkpoint_without_the_hub_is_measured_as_its_shapes_with_a_warning(tmp_path, slug):
    out, env = pick_checkpoint(tmp_path, f"suno/{slug}", hub=False)
    assert env == f"BARK_PERF_CHECKPOINT=random:{slug}\n"
    assert f"::warning::suno/{slug} is not cached and cannot be fetched: measuring random:{slug}" in out
    from perf_utils.bark.checkpoints import BUILT

    assert f"random:{slug}" in BUILT  # a checkpoint the suite builds


def test_a_fetched_checkpoint_or_any_other_is_measured_as_given(tmp_path):
    assert pick_checkpoint(tmp_path, "suno/bark-small", hub=True) == (
        "BARK_PERF_CHECKPOINT=suno/bark-small\n",
        "BARK_PERF_CHECKPOINT=suno/bark-small\n",
    )
    for given in ("tiny", "random:bark", "/models/bark"):
        out, env = pick_checkpoint(tmp_path, given, hub=False)
        assert env == f"BARK_PERF_CHECKPOINT={given}\n" and "warning" not in out
