"""Sharding covers every benchmark exactly once, and merged shards give the verdict of an unsharded run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from perf_utils.bark import configs
from perf_utils.gate.compare import compare
from perf_utils.gate.thresholds import Thresholds
from perf_utils.measure.run import Case, cases, order, parse_shard, shard
from perf_utils.record import store as baselines
from perf_utils.record.record import BenchmarkResult, RunRecord, Schedule

ROOT = Path(__file__).resolve().parents[1]


def collected(*args: str) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT, capture_output=True, text=True, env=dict(os.environ), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return [ln.split("[", 1)[1].rstrip("]") for ln in proc.stdout.splitlines() if "::test_generate[" in ln]


def test_shards_cover_each_benchmark_once_and_fp32_everywhere():
    """fp32 runs in every shard (each configuration's ratios to fp32 come from its own run); the rest once."""
    everything = cases(configs.select(), [1, 8])
    parts = [shard(everything, k, 3) for k in (1, 2, 3)]
    assert all({"bs1-fp32", "bs8-fp32"} <= {c.id for c in part} for part in parts)
    flat = [c.id for part in parts for c in part if c.config.name != "fp32"]
    assert sorted(flat) == sorted(c.id for c in everything if c.config.name != "fp32")
    assert len(flat) == len(set(flat))
    assert all(len(part) > 2 for part in parts), "every shard measures more than fp32 with 12 configurations"


def test_the_real_suite_collects_one_shard_in_the_run_loops_order():
    """The wiring: `pytest benchmarks --bark-shard 2/3` parametrizes exactly that shard, in `order`'s order."""
    expected = [c.id for c in order(shard(cases(configs.select(), [1, 8]), 2, 3))]
    assert collected("--bark-shard", "2/3") == expected


def test_a_configuration_stays_in_one_shard():
    all_cases = cases(configs.select(), [1, 8])
    for n in (1, 2, 5, 12, 20):
        owners: dict[str, set[int]] = {}
        for k in range(1, n + 1):
            for case in shard(all_cases, k, n):
                owners.setdefault(case.config.name, set()).add(k)
        assert owners.pop("fp32") == set(range(1, n + 1))
        assert all(len(v) == 1 for v in owners.values())
        assert set(owners) == {c.name for c in configs.select()} - {"fp32"}


@pytest.mark.parametrize("spec", ["0/3", "4/3", "x", "1/0", "2"])
def test_bad_shard_spec(spec):
    with pytest.raises(ValueError, match="--bark-shard"):
        parse_shard(spec)


def test_bad_shard_option_is_a_usage_error():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q", "--bark-shard", "5/4"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 4 and "--bark-shard '5/4'" in proc.stdout + proc.stderr


def _record(results):
    return RunRecord(
        "hw", "cuda:0", {"key": "suno/bark-small", "kind": "hub", "revision": "abc"},
        {"n_tokens": 256, "prompts_sha256": "p", "seed": 0, "sampling": {}}, {}, results,
    )  # fmt: skip


def _result(config, bs, factor=1.0, status="ok"):
    rounds = [{"latency_s": factor * (1 + i / 100), "host_peak_mb": 100.0 * factor} for i in range(5)]
    reason = None if status == "ok" else "needs an accelerator"
    return BenchmarkResult(config, bs, status, reason, rounds if status == "ok" else [], {"semantic_tokens": 256})


def test_merged_shards_give_the_unsharded_verdict(tmp_path):
    names = [c.name for c in configs.select()]
    base = _record([_result(n, bs) for n in names for bs in (1, 8)])
    factors = {"fp16": 1.6, "bf16": 0.5}  # one regression, one improvement
    now_results = [
        _result(n, bs, factors.get(n, 1.0), "unavailable" if n == "bettertransformer" else "ok")
        for n in names
        for bs in (1, 8)
    ]
    unsharded = compare(base, _record(now_results), Thresholds())
    all_cases = [Case(configs.get(r.config), r.batch_size) for r in now_results]
    paths = []
    for k in (1, 2, 3):
        ids = {c.id for c in shard(all_cases, k, 3)}
        path = tmp_path / f"shard{k}.json"
        baselines.write_atomic(path, _record([r for r in now_results if r.id in ids]))
        paths.append(path)
    merged = baselines.merge_shards(paths)
    sharded = compare(base, merged, Thresholds())
    assert {v.id: v.verdict for v in sharded.verdicts} == {v.id: v.verdict for v in unsharded.verdicts}
    assert sharded.failed == unsharded.failed is True
    verdicts = {v.id: v.verdict for v in sharded.verdicts}
    assert verdicts["bs1-fp16"] == "regressed" and verdicts["bs8-bf16"] == "improved"
    assert verdicts["bs1-bettertransformer"] == "lost"


def test_overlapping_or_mismatched_shards_are_refused_and_fp32_is_kept_once(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    baselines.write_atomic(a, _record([_result("fp32", 1), _result("fp16", 1)]))
    baselines.write_atomic(b, _record([_result("fp32", 1, factor=2.0), _result("bf16", 1)]))
    merged = baselines.merge_shards([a, b])
    assert [r.id for r in merged.results] == ["bs1-fp32", "bs1-fp16", "bs1-bf16"]
    assert merged.by_id()["bs1-fp32"].median("latency_s") == pytest.approx(1.02)  # the first shard's
    baselines.write_atomic(b, _record([_result("fp16", 1)]))
    with pytest.raises(baselines.BaselineError, match="overlapping shards"):
        baselines.merge_shards([a, b])
    other = _record([_result("bf16", 1)])
    other.hardware = "other-gpu"
    baselines.write_atomic(b, other)
    with pytest.raises(baselines.BaselineError, match="hardware differs"):
        baselines.merge_shards([a, b])


def test_a_merged_run_says_which_shard_was_interrupted(tmp_path):
    """A nightly shard cut by its job's time limit keeps what it measured; the merged run names it, so the gate
    judges the whole as interrupted (never adopted), whichever shard it was."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    baselines.write_atomic(a, _record([_result("fp32", 1), _result("fp16", 1)]))
    baselines.write_atomic(b, _record([_result("fp32", 1)]))
    assert baselines.merge_shards([a, b]).interrupted is None
    cut = _record([_result("fp32", 1)])
    cut.schedule = Schedule(invocations=2, interrupted="interrupted in invocation 3 of 3: what its worker process ...")
    baselines.write_atomic(b, cut)
    merged = baselines.merge_shards([a, b])
    assert merged.interrupted == f"{b}: interrupted in invocation 3 of 3: what its worker process ..."
    assert merged.schedule == Schedule(interrupted=merged.interrupted)  # the first shard's schedule, and the cut
