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
    assert found == 10


GPU_RUN = ("--venvs-dir", '-- --bark-checkpoint "$BARK_PERF_CHECKPOINT"')


@pytest.mark.parametrize(
    ("workflow", "job", "gate_id", "results", "run_options"),
    [
        ("upgrade-gate.yml", "compare-stacks", "gate", "results/", GPU_RUN),
        (
            "upgrade-gate.yml",
            "compare-stacks-cpu",
            "gate",
            "results/",
            ('--torch "torch==2.13.0+cpu"', "-- --bark-device cpu"),
        ),
        ("nightly-gpu.yml", "shard", "paired", "shard-results/", GPU_RUN),
    ],
)
def test_a_failed_stack_gate_is_measured_again_package_by_package(workflow, job, gate_id, results, run_options):
    """Only after the paired gate itself failed (not a failed install), into a folder of its own that is uploaded,
    with the stacks and run options the gate had."""
    data = yaml.safe_load((ROOT / ".github" / "workflows" / workflow).read_text())
    job_steps = data["jobs"][job]["steps"]
    gate = next(step for step in job_steps if step.get("id") == gate_id)
    assert "python -m perf_utils compare-stacks" in gate["run"] and "--by-package" not in gate["run"]
    which = next(step for step in job_steps if "--by-package" in step.get("run", ""))
    assert which["if"] == f"failure() && steps.{gate_id}.outcome == 'failure'"
    assert f"--results-dir {results}by-package" in which["run"]
    for option in ("--pinned", "--candidate", *run_options):
        assert option in which["run"] and option in gate["run"], option
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


def pick_stacks(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `.ci/stacks-to-gate` as an upgrade-gate step does, in the git checkout `tmp_path / "repo"`; returns its
    exit status, its output and what it added to $GITHUB_ENV."""
    env_file = tmp_path / "github_env"
    env_file.write_text("")
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    env = {"PATH": "/usr/bin:/bin", "GITHUB_ENV": str(env_file), "RUNNER_TEMP": str(runner_temp), **(env or {})}
    proc = subprocess.run(["bash", str(ROOT / ".ci" / "stacks-to-gate"), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path / "repo", timeout=60)  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr, env_file.read_text()


def pull_request(tmp_path: Path, base: str | None, head: str) -> None:
    """A checkout whose HEAD^1 holds stacks/current.txt as `base` (None: no such file) and HEAD as `head`."""
    repo = tmp_path / "repo"
    (repo / "stacks").mkdir(parents=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=repo, check=True)
    for text in (base, head):
        if text is not None:
            (repo / "stacks" / "current.txt").write_text(text)
        (repo / "README").write_text(str(text))
        subprocess.run([*git, "add", "-A"], cwd=repo, check=True)
        subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=repo, check=True)


BASE = "# The current releases.\ntransformers==5.24.0\noptimum==2.3.0\naccelerate==1.15.0\n"


def test_a_pull_request_that_bumps_the_current_stack_is_gated_from_its_base_pins(tmp_path):
    pull_request(tmp_path, BASE, BASE.replace("5.24.0", "5.25.0").replace("1.15.0", "1.16.0"))
    rc, out, env = pick_stacks(tmp_path, "HEAD^1")
    pinned = tmp_path / "runner-temp" / "stacks-current-at-base.txt"
    assert rc == 0, out
    assert env == f"BARK_PERF_PINNED={pinned}\nBARK_PERF_CANDIDATE=stacks/current.txt\n"
    assert pinned.read_text() == BASE  # the base's file itself, not legacy.txt
    assert "< transformers==5.24.0" in out and "> transformers==5.25.0" in out and "optimum" not in out


@pytest.mark.parametrize(
    "head",
    [
        BASE.replace("releases.", "releases, reworded.") + "\n",  # a comment and a blank line
        "accelerate==1.15.0  # the last one\noptimum==2.3.0\ntransformers==5.24.0\n",  # reordered, a trailing comment
    ],
)
def test_a_pull_request_that_keeps_the_pins_has_no_upgrade_to_gate(tmp_path, head):
    pull_request(tmp_path, BASE, head)
    rc, out, env = pick_stacks(tmp_path, "HEAD^1")
    assert (rc, env) == (0, "BARK_PERF_PINNED=\n"), out
    assert "stacks/current.txt pins the same packages as at HEAD^1: no upgrade to gate" in out


def test_a_base_without_the_current_stack_is_an_error_that_says_so(tmp_path):
    pull_request(tmp_path, None, BASE)
    rc, out, env = pick_stacks(tmp_path, "HEAD^1")
    assert rc == 2 and env == ""
    assert "stacks/current.txt is not in HEAD^1 (the pull request's base)" in out


def test_stacks_given_by_hand_are_compared_as_given(tmp_path):
    (tmp_path / "repo").mkdir()
    rc, out, env = pick_stacks(tmp_path, "stacks/legacy.txt", "transformers==5.25.0 optimum==2.3.0")
    assert rc == 0, out
    assert env == "BARK_PERF_PINNED=stacks/legacy.txt\nBARK_PERF_CANDIDATE=transformers==5.25.0 optimum==2.3.0\n"


@pytest.mark.parametrize("job", ["compare-stacks", "compare-stacks-cpu"])
def test_both_upgrade_gate_jobs_take_a_pull_requests_stacks_from_its_base(job):
    """Each picks its stacks with `.ci/stacks-to-gate` (from the merge commit's first parent on a pull request,
    which a checkout of depth 2 holds), and skips every later step where the pins stayed; each measuring step
    compares the stacks picked."""
    data = yaml.safe_load((ROOT / ".github" / "workflows" / "upgrade-gate.yml").read_text())
    job_steps = data["jobs"][job]["steps"]
    assert job_steps[0]["uses"] == "actions/checkout@v4" and job_steps[0]["with"]["fetch-depth"] == 2
    pick = next(i for i, step in enumerate(job_steps) if "stacks-to-gate" in step.get("run", ""))
    assert "bash .ci/stacks-to-gate HEAD^1" in job_steps[pick]["run"]
    assert 'bash .ci/stacks-to-gate "$PINNED" "$CANDIDATE"' in job_steps[pick]["run"]
    for step in job_steps[pick + 1 :]:
        if "run" in step:
            assert "env.BARK_PERF_PINNED != ''" in step["if"] or "steps.gate.outcome" in step["if"], step
        if "compare-stacks" in step.get("run", ""):
            assert '--pinned "$BARK_PERF_PINNED" --candidate "$BARK_PERF_CANDIDATE"' in step["run"]


def test_the_cpu_upgrade_gate_runs_on_a_hosted_runner_with_the_cpu_wheel():
    data = yaml.safe_load((ROOT / ".github" / "workflows" / "upgrade-gate.yml").read_text())
    job = data["jobs"]["compare-stacks-cpu"]
    assert job["runs-on"] == "ubuntu-latest"
    assert job["env"]["PIP_EXTRA_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"  # the venvs' pip too
    gate = "\n".join(steps("upgrade-gate.yml", "compare-stacks-cpu"))
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in gate
