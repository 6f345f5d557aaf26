"""Sharding covers every benchmark exactly once, and merged shards give the verdict of an unsharded run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from perf_utils.bark import configs
from perf_utils.gate.compare import compare
from perf_utils.gate.thresholds import Thresholds
from perf_utils.measure.run import Case, cases, order, shard
from perf_utils.record import store as baselines
from perf_utils.record.record import BenchmarkResult, RunRecord, Schedule, Shard

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
    parts = [shard(everything, Shard(k, 3)) for k in (1, 2, 3)]
    assert all({"bs1-fp32", "bs8-fp32"} <= {c.id for c in part} for part in parts)
    flat = [c.id for part in parts for c in part if c.config.name != "fp32"]
    assert sorted(flat) == sorted(c.id for c in everything if c.config.name != "fp32")
    assert len(flat) == len(set(flat))
    assert all(len(part) > 2 for part in parts), "every shard measures more than fp32 with 12 configurations"


def test_the_real_suite_collects_one_shard_in_the_run_loops_order():
    """The wiring: `pytest benchmarks --bark-shard 2/3` parametrizes exactly that shard, in `order`'s order."""
    expected = [c.id for c in order(shard(cases(configs.select(), [1, 8]), Shard(2, 3)))]
    assert collected("--bark-shard", "2/3") == expected


def test_a_configuration_stays_in_one_shard():
    all_cases = cases(configs.select(), [1, 8])
    for n in (1, 2, 5, 12, 20):
        owners: dict[str, set[int]] = {}
        for k in range(1, n + 1):
            for case in shard(all_cases, Shard(k, n)):
                owners.setdefault(case.config.name, set()).add(k)
        assert owners.pop("fp32") == set(range(1, n + 1))
        assert all(len(v) == 1 for v in owners.values())
        assert set(owners) == {c.name for c in configs.select()} - {"fp32"}


@pytest.mark.parametrize("spec", ["0/3", "4/3", "x", "1/0", "2"])
def test_bad_shard_spec(spec):
    with pytest.raises(ValueError, match=f"shard '{spec}'"):
        Shard.parse(spec)


def test_bad_shard_option_is_a_usage_error():
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "benchmarks", "--collect-only", "-q", "--bark-shard", "5/4"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 4 and "--bark-shard" in out and "'5/4': K must be between 1 and N" in out, out


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
        ids = {c.id for c in shard(all_cases, Shard(k, 3))}
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


def _shards(tmp_path, n, given, interrupted=None):
    """Shard records of a run split `n` ways, each with its fp32 and one configuration of its own; `given`: which
    are written (1-based). Returns their paths."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in given:
        record = _record(
            [_result("fp32", 1), _result(("fp16", "bf16", "torch_compile", "bettertransformer")[k - 1], 1)]
        )
        record.schedule = Schedule(invocations=2, shard=f"{k}/{n}", interrupted=interrupted if k == given[-1] else None)
        paths.append(tmp_path / f"shard{k}.json")
        baselines.write_atomic(paths[-1], record)
    return paths


def test_shards_that_say_which_they_are_merge_into_the_whole(tmp_path):
    merged = baselines.merge_shards(_shards(tmp_path, 3, [2, 1, 3]))
    assert merged.interrupted is None
    assert merged.schedule.shard is None  # the whole run, not the first shard given
    assert sorted(r.id for r in merged.results) == ["bs1-bf16", "bs1-fp16", "bs1-fp32", "bs1-torch_compile"]


def test_a_missing_shard_makes_the_merged_run_say_so_and_its_benchmarks_are_not_passed_as_unselected(tmp_path):
    """A shard whose job died before keeping a run (a lost runner) used to leave its benchmarks `not run` as "not
    selected in this run", and the nightly passed on three quarters of its matrix."""
    paths = _shards(tmp_path, 3, [1, 3])
    merged = baselines.merge_shards(paths)
    assert merged.interrupted == (
        "shard 2/3 missing: no run of it was given to merge (did its job fail before keeping one?)"
    )
    base = baselines.merge_shards(_shards(tmp_path / "base", 3, [1, 2, 3]))
    verdicts = {v.id: v for v in compare(base, merged, Thresholds()).verdicts}
    assert verdicts["bs1-bf16"].verdict == "not run"
    assert verdicts["bs1-bf16"].reason == "the run was cut short before it measured this"
    cut = baselines.merge_shards(_shards(tmp_path, 4, [2, 4], interrupted="interrupted in invocation 2 of 2: ..."))
    assert cut.interrupted == (
        f"{tmp_path / 'shard4.json'}: interrupted in invocation 2 of 2: ...; shards 1/4, 3/4 missing: no run of them "
        "was given to merge (did its job fail before keeping one?)"
    )


def test_shards_of_different_splits_twice_the_same_or_beside_an_unsharded_run_are_refused(tmp_path):
    first, second = _shards(tmp_path, 2, [1, 2])
    twice = tmp_path / "again.json"
    twice.write_text(first.read_text())
    with pytest.raises(baselines.BaselineError, match=r"again.json: is shard 1/2, as .*shard1.json is: the same shard"):
        baselines.merge_shards([first, twice, second])
    (other,) = _shards(tmp_path / "three", 3, [2])
    with pytest.raises(
        baselines.BaselineError, match=r"is shard 2/3, .*shard1.json is shard 1/2: runs split differently"
    ):
        baselines.merge_shards([first, other])
    whole = tmp_path / "whole.json"
    baselines.write_atomic(whole, _record([_result("fp32", 1), _result("bettertransformer", 1)]))
    with pytest.raises(baselines.BaselineError, match=r"whole.json: is not a shard \(its schedule names none\)"):
        baselines.merge_shards([first, second, whole])
