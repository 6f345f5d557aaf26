"""The GitHub Actions workflows validate against the published workflow schema (check-jsonschema's vendored
copy, so no network), and run the commands a person runs locally."""

import shutil
import subprocess
from pathlib import Path

import pytest

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


def test_workflows_run_the_local_commands():
    ci = (ROOT / ".github/workflows/ci.yml").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "pytest tests" in ci and "pytest tests" in readme
    assert 'pip install -e ".[dev]"' in ci and 'pip install -e ".[dev]"' in readme
    nightly = (ROOT / ".github/workflows/nightly-gpu.yml").read_text()
    assert "pytest benchmarks" in nightly and "--bark-shard" in nightly
    assert "python -m perf_utils merge" in nightly and "python -m perf_utils gate" in nightly
    assert "--history history/" in nightly and "actions/cache/save" in nightly  # the nightly keeps its runs
    upgrade = (ROOT / ".github/workflows/upgrade-gate.yml").read_text()
    assert "python -m perf_utils compare-stacks" in upgrade
