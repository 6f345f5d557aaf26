"""The gate, end to end: the real `pytest benchmarks` suite run in subprocesses on the tiny model.

Faults are injected through tests/fault_plugin.py under the healthy configuration's own name, so the faulty
run is compared benchmark by benchmark with a healthy baseline. The timing fault is large (each call takes 4x:
attention done twice only adds ~5-20% on the tiny model, less than this machine drifts between two runs) and
memory faults are deterministic, so these tests do not depend on how busy the machine is.
"""

import json
import shutil
import signal
import time
from pathlib import Path

import pytest
from suite import HARDWARE, bench, out, row

from perf_utils import baselines
from perf_utils.gate import EXIT_BAD_BASELINE, EXIT_INCOMPARABLE, EXIT_OK, EXIT_REGRESSION


def baseline_file(tmp: Path) -> Path:
    return baselines.path_for(tmp / "baselines", HARDWARE, "tiny")


@pytest.fixture(scope="module")
def healthy(tmp_path_factory) -> Path:
    """A baseline of bs1 and bs8 `baseline`, adopted from a clean run."""
    tmp = tmp_path_factory.mktemp("healthy")
    proc = bench(tmp, "--bark-configs", "baseline", "--bark-save-baseline", "--benchmark-autosave")
    assert proc.returncode == 0, out(proc)
    assert "baseline created" in proc.stdout
    assert baseline_file(tmp).exists()
    return tmp


@pytest.fixture
def work(healthy, tmp_path) -> Path:
    """A private copy of the healthy baselines for one test to compare against (or damage)."""
    shutil.copytree(healthy / "baselines", tmp_path / "baselines")
    shutil.copytree(healthy / "benchmark-storage", tmp_path / "benchmark-storage")
    return tmp_path


def test_unchanged_code_compares_clean(work):
    summary = work / "job-summary.md"
    proc = bench(work, "--bark-configs", "baseline", "--benchmark-compare", GITHUB_STEP_SUMMARY=str(summary))
    output = out(proc)
    assert proc.returncode == EXIT_OK, output
    for bid in ("bs1-baseline", "bs8-baseline"):
        assert "REGRESSED" not in row(output, bid)
    assert "bark gate passed" in output
    markdown = summary.read_text()  # GitHub Actions' job summary gets the same table as Markdown
    assert "| bs1-baseline " in markdown and "bark gate passed" in markdown


def assert_fault_regresses(work: Path, fault: str, metric_label: str) -> str:
    """A faulty run fails the gate, and both batch sizes' rows name the metric."""
    proc = bench(work, "--bark-configs", "baseline", "--benchmark-compare", fault=fault)
    output = out(proc)
    assert proc.returncode == EXIT_REGRESSION, output
    for bid in ("bs1-baseline", "bs8-baseline"):
        line = row(output, bid)
        assert "REGRESSED" in line and metric_label in line
    return output


def test_injected_slowdown_fails_naming_config_and_metric(work):
    """Every call takes 4x as long: beyond the CPU threshold (100%) however the shared machine drifts."""
    output = assert_fault_regresses(work, "slowdown:3", "latency")
    assert "bark gate FAILED" in output


def test_fidelity_fault_fails_the_run_at_unchanged_speed(work):
    """Slightly drifted fine-model weights: the same work, so only the fidelity gate can catch it."""
    proc = bench(work, "--bark-configs", "baseline", "--bark-batch-sizes", "1", "--benchmark-compare",
                 fault="perturb_weights")  # fmt: skip
    output = out(proc)
    assert proc.returncode == EXIT_REGRESSION, output
    assert "computes something else: fine logits relative error" in output  # the benchmark itself fails
    line = row(output, "bs1-baseline")
    assert "FAIL" in line and "REGRESSED" in line and "fidelity: fine" in line


def test_pytest_benchmark_compare_fail_keeps_working(work):
    """pytest-benchmark's own gate, on its own storage, next to ours."""
    args = ["--bark-configs", "baseline", "--bark-batch-sizes", "8", "--benchmark-compare"]
    proc = bench(work, *args, "--benchmark-compare-fail=median:100%", fault="slowdown:3")
    assert proc.returncode == EXIT_REGRESSION, out(proc)
    assert "Performance has regressed" in out(proc)


def test_extra_buffer_fails_on_host_memory(work):
    assert_fault_regresses(work, "extra_buffer:256", "host peak")


def _add_result(path: Path, config: str, batch_size: int = 1) -> None:
    """Pretend the baseline also measured `config` (copying the baseline's rounds)."""
    data = json.loads(path.read_text())
    src = next(r for r in data["results"] if r["batch_size"] == batch_size)
    data["results"].append({**src, "config": config})
    path.write_text(json.dumps(data))


def test_lost_configuration_fails_unless_allowed(work):
    _add_result(baseline_file(work), "bettertransformer")
    args = ["--bark-configs", "baseline,bettertransformer", "--bark-batch-sizes", "1", "--benchmark-compare"]
    proc = bench(work, *args)
    output = out(proc)
    assert proc.returncode == EXIT_REGRESSION, output
    line = row(output, "bs1-bettertransformer")
    assert "LOST" in line and "bettertransformer needs optimum<2.0" in line
    assert line.split()[1] != "-"  # the latency the lost configuration had
    allowed = bench(work, *args, "--bark-allow-lost", "bettertransformer")
    assert allowed.returncode == EXIT_OK, out(allowed)
    assert "lost (allowed)" in row(out(allowed), "bs1-bettertransformer")


def test_new_configuration_is_reported(work):
    proc = bench(work, "--bark-configs", "baseline,bf16", "--bark-batch-sizes", "1", "--benchmark-compare")
    output = out(proc)
    assert proc.returncode == EXIT_OK, output
    assert " new " in row(output, "bs1-bf16") + " "
    assert "not run" in row(output, "bs8-baseline")


def test_no_baseline_runs_and_says_how_to_adopt(tmp_path):
    proc = bench(tmp_path, "--bark-configs", "baseline", "--bark-batch-sizes", "1", "--benchmark-compare")
    output = out(proc)
    assert proc.returncode == EXIT_OK, output
    assert "no baseline for hardware" in output
    assert "--bark-save-baseline" in output
    assert list((tmp_path / "results").glob("*/run.json")), "the run itself must be kept"


def test_other_hardware_is_never_compared_silently(work):
    other = work / "baselines" / "nvidia-h100-80gb-hbm3" / "tiny.json"
    other.parent.mkdir(parents=True)
    baseline_file(work).rename(other)
    data = json.loads(other.read_text())
    data["hardware"] = "nvidia-h100-80gb-hbm3"
    other.write_text(json.dumps(data))
    args = ["--bark-configs", "baseline", "--bark-batch-sizes", "1"]
    found = bench(work, *args, "--benchmark-compare")
    assert found.returncode == EXIT_OK, out(found)
    assert "were NOT compared" in out(found) and "nvidia-h100-80gb-hbm3" in out(found)
    explicit = bench(work, *args, "--bark-baseline", str(other))
    assert explicit.returncode == EXIT_INCOMPARABLE, out(explicit)
    assert "refusing to compare" in out(explicit) and "hardware differs" in out(explicit)
    forced = bench(work, *args, "--bark-baseline", str(other), "--bark-force-compare")
    assert "comparing with" in out(forced) and "bs1-baseline" in out(forced)
    assert forced.returncode in (EXIT_OK, EXIT_REGRESSION)


def test_other_workload_is_refused(work):
    proc = bench(work, "--bark-configs", "baseline", "--bark-batch-sizes", "1", "--benchmark-compare",
                 "--bark-tokens", "24")  # fmt: skip
    assert proc.returncode == EXIT_INCOMPARABLE, out(proc)
    assert "workload differs: n_tokens 16 -> 24" in out(proc)


BAD_BASELINES = {
    "invalid-json": (lambda text: text[: len(text) // 2], "invalid JSON at line"),
    "unknown-schema": (lambda text: text.replace('"schema_version": 1', '"schema_version": 99'), "schema_version"),
    "missing-field": (
        lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "workload"}),
        "'workload' is a required property",
    ),
    "mistyped-field": (
        lambda text: text.replace('"latency_s": ', '"latency_s": "slow", "x": ', 1),
        "results[0].rounds[0].latency_s",
    ),
}


@pytest.mark.parametrize("case", BAD_BASELINES, ids=list(BAD_BASELINES))
def test_bad_baseline_names_file_and_field_and_is_not_overwritten(work, case):
    damage, expected = BAD_BASELINES[case]
    path = baseline_file(work)
    path.write_text(damage(path.read_text()))
    before = path.read_bytes()
    proc = bench(work, "--bark-configs", "baseline", "--bark-batch-sizes", "1", "--bark-rounds", "2",
                 "--bark-warmup", "0", "--benchmark-compare", "--bark-save-baseline")  # fmt: skip
    output = out(proc)
    assert proc.returncode == EXIT_BAD_BASELINE, output
    assert str(path) in output and expected in output
    assert path.read_bytes() == before


def test_failed_run_never_updates_the_baseline(work):
    path = baseline_file(work)
    before = path.read_bytes()
    proc = bench(work, "--bark-configs", "baseline", "--bark-save-baseline", "--bark-rounds", "2",
                 "--bark-warmup", "0", fault="crash")  # fmt: skip
    assert proc.returncode != 0, out(proc)
    assert "baseline NOT updated" in out(proc)
    assert path.read_bytes() == before


def test_interrupted_run_never_damages_the_baseline(work):
    path = baseline_file(work)
    before = path.read_bytes()
    proc = bench(work, "--bark-configs", "baseline", "--bark-save-baseline", "-v", popen=True)
    deadline = time.monotonic() + 300
    for line in proc.stdout:  # interrupt in the middle of measuring
        if ": round 1/" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0, rest
    assert path.read_bytes() == before
    assert not list(path.parent.glob("*.tmp"))


def test_update_merges_and_says_what_changed(work):
    path = baseline_file(work)
    proc = bench(work, "--bark-configs", "bf16", "--bark-batch-sizes", "1", "--bark-rounds", "2",
                 "--bark-warmup", "0", "--bark-save-baseline", "--benchmark-compare")  # fmt: skip
    output = out(proc)
    assert proc.returncode == EXIT_OK, output
    assert "baseline updated" in output and "new: bs1-bf16" in output
    ids = {r.id for r in baselines.load(path).results}
    assert ids == {"bs1-baseline", "bs8-baseline", "bs1-bf16"}  # nothing that was not rerun is lost
