"""History: kept runs, step/drift detection and the latest-run z-score, on synthetic nightly series."""

import json
import random
from dataclasses import replace

import pytest

from perf_utils.gate import trends as history
from perf_utils.gate.compare import IMPROVED, REGRESSED, UNCHANGED
from perf_utils.gate.thresholds import Thresholds
from perf_utils.gate.trends import Point, analyze, detect_steps
from perf_utils.record import store
from perf_utils.record import store as baselines
from perf_utils.record.metrics import HOST_PROBE, INVOCATION_PROBE
from perf_utils.record.record import BenchmarkResult, RunRecord, Schedule
from perf_utils.record.store import kept_runs

TH = Thresholds()  # time 15%, memory 5% and 4 MB


def points(values):
    return [Point(f"2026-11-{i + 1:02d}T02:17:00+00:00", v, v * 0.98, v * 1.02) for i, v in enumerate(values)]


def noisy(n, level=1.0, cv=0.03, seed=0):
    rng = random.Random(seed)
    return [level * rng.gauss(1, cv) for _ in range(n)]


def test_a_flat_noisy_series_is_unchanged():
    for seed in range(20):
        trend = analyze("bs1-fp32", "latency_s", points(noisy(25, seed=seed)), TH)
        assert trend.verdict == UNCHANGED, (seed, trend.why)


def test_a_step_held_for_several_nights_is_called_where_it_happened():
    values = noisy(20) + noisy(5, level=1.3, seed=1)
    trend = analyze("bs1-fp32", "latency_s", points(values), TH)
    assert trend.verdict == REGRESSED
    assert trend.steps[-1] == 20
    assert "stepped +" in trend.why and "2026-11-21" in trend.why and "held for 5 runs" in trend.why
    assert trend.span == (range(0, 20), range(20, 25))


def test_the_latest_night_alone_is_called_against_recent_history():
    values = noisy(24) + [1.4]
    trend = analyze("bs8-fp32", "latency_s", points(values), TH)
    assert trend.verdict == REGRESSED
    assert "latest run +" in trend.why and trend.z > history.Z_LIMIT
    assert trend.span == (range(4, 24), range(24, 25))  # the 20 runs it is judged against, then itself


def test_a_creeping_slowdown_below_the_threshold_each_step_is_called_as_drift():
    """Two steps of +10%, each under the 15% threshold, held long enough to be levels: the level moved +21%."""
    values = noisy(8, cv=0.005) + noisy(8, level=1.1, cv=0.005, seed=1) + noisy(8, level=1.21, cv=0.005, seed=2)
    trend = analyze("bs1-fp32", "latency_s", points(values), TH)
    assert trend.verdict == REGRESSED
    assert trend.steps == [8, 16]
    assert trend.why.startswith("drifted +21") and "over 2 steps since 2026-11-01" in trend.why
    assert trend.span == (range(0, 8), range(16, 24))  # the first level against the last


def test_a_figure_dashes_only_the_steps_the_report_could_call():
    """Seen 2026-12-03: the fit put a -5% level change in bs8-fp16's latency, the report said "no step beyond the
    thresholds" and the figure dashed it as "a step". Marked: a step past the threshold, or every step of a drift."""
    small = analyze("bs8-fp16", "latency_s", points(noisy(8, cv=0.005) + noisy(8, level=0.95, cv=0.005, seed=1)), TH)
    assert small.steps == [8] and small.marked == [] and small.verdict == UNCHANGED
    values = noisy(8, cv=0.005) + noisy(8, level=1.05, cv=0.005, seed=1) + noisy(8, level=1.35, cv=0.005, seed=2)
    large = analyze("bs1-fp32", "latency_s", points(values), TH)
    assert large.steps == [8, 16] and large.marked == [16] and "stepped +28" in large.why, (large.steps, large.why)
    values = noisy(8, cv=0.005) + noisy(8, level=1.1, cv=0.005, seed=1) + noisy(8, level=1.21, cv=0.005, seed=2)
    drift = analyze("bs1-fp32", "latency_s", points(values), TH)
    assert drift.verdict == REGRESSED and drift.marked == drift.steps == [8, 16]
    from perf_utils.report.plots import trend_figure

    for trend, dashed in ((small, []), (large, [15.5]), (drift, [7.5, 15.5])):
        [ax, *_] = trend_figure([trend], "latency_s").axes
        assert [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"] == dashed


def test_direction_follows_the_metric():
    faster = noisy(20) + noisy(5, level=0.6, seed=3)
    assert analyze("bs1-x", "latency_s", points(faster), TH).verdict == IMPROVED
    assert analyze("bs1-x", "throughput_sps", points(faster), TH).verdict == REGRESSED


def test_memory_steps_below_the_floor_are_not_called():
    small = [10.0] * 10 + [13.0] * 5  # +30%, but only 3 MB
    assert analyze("bs1-x", "host_peak_mb", points(small), TH).verdict == UNCHANGED
    large = [100.0] * 10 + [130.0] * 5
    assert analyze("bs1-x", "host_peak_mb", points(large), TH).verdict == REGRESSED


def test_too_few_runs_call_nothing():
    trend = analyze("bs1-x", "latency_s", points([1.0, 1.0, 5.0]), TH)
    assert trend.verdict == history.TOO_FEW and "3 run(s)" in trend.why


def test_detect_steps_finds_one_step_and_none_in_noise():
    assert detect_steps([1.0] * 8 + [2.0] * 8) == [8]
    assert detect_steps(noisy(30, cv=0.05, seed=7)) == []


def _record(created, latency, hardware="cpu-amd-epyc-2c", n_tokens=32):
    rounds = [{"latency_s": latency * f, "host_peak_mb": 20.0, "throughput_sps": 1 / latency} for f in (0.99, 1, 1.01)]
    return RunRecord(
        hardware,
        "cpu",
        {"key": "tiny", "kind": "tiny", "revision": None},
        {"n_tokens": n_tokens, "prompts_sha256": "p", "seed": 0, "sampling": {}},
        {},
        [BenchmarkResult("fp32", 1, "ok", rounds=rounds)],
        created=created,
    )


def test_kept_runs_are_ordered_filtered_and_survive_a_broken_file(tmp_path):
    for day, latency in ((3, 1.2), (1, 1.0), (2, 1.1)):
        store.keep_run(tmp_path, _record(f"2026-11-0{day}T02:00:00+00:00", latency))
    store.keep_run(tmp_path, _record("2026-11-04T02:00:00+00:00", 9.0, hardware="nvidia-h100"))
    store.keep_run(tmp_path, _record("2026-11-05T02:00:00+00:00", 9.0, n_tokens=16))
    broken = tmp_path / "2026-11-06-broken" / "run.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    legacy = tmp_path / "2026-10-31-legacy.json"  # the flat layout of earlier versions is still read
    legacy.write_text(json.dumps(_record("2026-10-31T02:00:00+00:00", 0.9).to_dict()))

    runs, skipped = kept_runs(tmp_path, like=_record("2026-11-07T00:00:00+00:00", 1.0))
    assert [r.record.created[:10] for r in runs] == ["2026-10-31", "2026-11-01", "2026-11-02", "2026-11-03"]
    assert len(skipped) == 1 and str(broken) in skipped[0] and "invalid JSON" in skipped[0]
    assert [p.median for p in history.series(runs, "bs1-fp32", "latency_s")] == [0.9, 1.0, 1.1, 1.2]
    assert len(kept_runs(tmp_path)[0]) == 6  # without `like`: every readable run


def test_keep_runs_removes_only_the_oldest_runs_like_this_one(tmp_path, capsys):
    """`--bark-keep-runs 2` through the gate of a saved run: of five nights of this machine's tiny runs (one in the
    flat layout of earlier versions) the three oldest go, the run just kept stays; another machine's run, another
    workload's and an unreadable file are never touched."""
    from perf_utils import cli

    legacy = tmp_path / "history" / "2026-10-31-legacy.json"
    legacy.parent.mkdir()
    legacy.write_text(json.dumps(_record("2026-10-31T02:00:00+00:00", 0.9).to_dict()))
    for day in (1, 2, 3):
        store.keep_run(tmp_path / "history", _record(f"2026-11-0{day}T02:00:00+00:00", 1.0))
    other = [store.keep_run(tmp_path / "history", _record("2026-10-01T02:00:00+00:00", 9.0, hardware="nvidia-h100")),
             store.keep_run(tmp_path / "history", _record("2026-10-02T02:00:00+00:00", 9.0, n_tokens=16))]  # fmt: skip
    broken = tmp_path / "history" / "2026-10-03-broken" / "run.json"
    broken.parent.mkdir()
    broken.write_text("{not json")
    tonight = tmp_path / "tonight.json"
    store.write_atomic(tonight, _record("2026-11-04T02:00:00+00:00", 1.0))
    assert cli.main(["gate", str(tonight), "--history", str(tmp_path / "history"), "--keep-runs", "2"]) == 0
    out = capsys.readouterr().out
    runs, skipped = kept_runs(tmp_path / "history", like=_record("2026-11-05T00:00:00+00:00", 1.0))
    assert [r.record.created[:10] for r in runs] == ["2026-11-03", "2026-11-04"]
    assert all(p.exists() for p in other) and broken.exists() and len(skipped) == 1
    said = "removed the 3 oldest kept runs beyond 2 (--bark-keep-runs): 2026-10-31-legacy .. 2026-11-02T020000Z-cpu"
    assert said + "-amd-epyc-2c-tiny" in out, out
    # the run just kept is never removed, however old it says it is
    spared = store.keep_run(tmp_path / "history", _record("2026-01-01T02:00:00+00:00", 1.0))
    like, _ = kept_runs(tmp_path / "history", like=_record("2026-11-05T00:00:00+00:00", 1.0))
    pruned = store.prune_runs(like, 1, spare=spared)
    assert [r.path for r in pruned.gone] == [p.path for p in runs]
    assert [r.path for r in pruned.left] == [spared] and spared.exists()
    first, last = (r.path.parent.name for r in runs)
    assert pruned.said == f"removed the 2 oldest kept runs beyond 1 (--bark-keep-runs): {first} .. {last}"
    assert store.prune_runs(pruned.left, 1, spare=spared) == store.Pruned(pruned.left, [], None)


def test_keep_writes_a_valid_run_atomically_named_by_its_shard(tmp_path):
    """A shard's kept folder says which shard it is (from its record's schedule), so the shards of one nightly,
    started in the same second, keep their own names in the one folder a CI job gathers them into."""
    sharded = _record("2026-11-01T02:00:00+00:00", 1.0)
    sharded.schedule = replace(sharded.schedule or Schedule(), shard="1/4")
    path = store.keep_run(tmp_path, sharded)
    assert path.name == "run.json" and path.parent.name.endswith("-cpu-amd-epyc-2c-tiny-shard1of4")
    assert baselines.load(path).results[0].id == "bs1-fp32"
    assert baselines.load(path).schedule.shard == "1/4"
    assert not list(tmp_path.rglob("*.tmp"))
    other = replace(sharded, schedule=replace(sharded.schedule, shard="2/4"))
    assert store.keep_run(tmp_path, other).parent.name.endswith("-tiny-shard2of4")


def test_two_runs_kept_in_the_same_second_are_both_kept_in_order(tmp_path):
    """A run is named by its second; the second run of that second gets `-2` instead of overwriting the first, and
    the history reads them in the order they were written. The same run kept `again` is written over."""
    first = store.keep_run(tmp_path, _record("2026-11-01T02:00:00+00:00", 1.0))
    second = store.keep_run(tmp_path, _record("2026-11-01T02:00:00+00:00", 2.0))
    assert second.parent.name == first.parent.name + "-2" and first.exists()
    assert [r.record.results[0].median("latency_s") for r in kept_runs(tmp_path)[0]] == [1.0, 2.0]
    assert store.keep_run(tmp_path, _record("2026-11-01T02:00:00+00:00", 3.0), again=first) == first
    assert baselines.load(first).results[0].median("latency_s") == 3.0 and len(kept_runs(tmp_path)[0]) == 2


@pytest.mark.parametrize("metric", ["latency_s", "throughput_sps"])
def test_trends_cover_every_measured_benchmark(tmp_path, metric):
    for day in range(1, 6):
        store.keep_run(tmp_path, _record(f"2026-11-0{day}T02:00:00+00:00", 1.0 if day < 4 else 2.0))
    runs, _ = kept_runs(tmp_path)
    [trend] = history.trends(runs, runs[-1].record, TH, [metric])
    assert trend.benchmark == "bs1-fp32" and len(trend.points) == 5
    assert trend.verdict == REGRESSED


def _probed(created, latency, probe, peak=20.0):
    """A kept run whose host ran the probe in `probe` s (every round's invocation alike)."""
    record = _record(created, latency)
    record.results[0].rounds = [
        {"latency_s": latency * f, "throughput_sps": 1 / (latency * f), "host_peak_mb": peak, HOST_PROBE: probe,
         INVOCATION_PROBE: probe}
        for f in (0.99, 1, 1.01)
    ]  # fmt: skip
    return record


def test_the_history_reads_time_per_host_probe_as_the_gate_does(tmp_path):
    """Nights 5-7 on a host 30% slower for every program (latency and probe alike): per host probe no trend, as
    measured a step. Bark itself 30% slower (and 10 MB heavier) on a host as fast as before: called either way, in
    seconds at the latest run's host speed. A kept run without the probe is left out of the time series, counted,
    and still in memory's."""

    def kept(folder, late_latency, late_probe, late_peak=20.0):
        for day in range(1, 8):
            late = day >= 5
            run = _probed(f"2026-11-0{day}T02:00:00+00:00", late_latency if late else 1.0, late_probe if late else 0.01,
                          late_peak if late else 20.0)  # fmt: skip
            store.keep_run(tmp_path / folder, run)
        return kept_runs(tmp_path / folder)[0]

    def called(runs, per_probe):
        found = history.of_history(runs, runs[-1].record, TH, "host_peak_mb", per_probe)
        return found, {t.metric: t.verdict for t in found.trends if t.verdict in (REGRESSED, IMPROVED)}

    host = kept("host", 1.3, 0.013)
    found, calls = called(host, per_probe=True)
    assert found.per_host_probe and calls == {}, [t.why for t in found.trends]
    assert [t.metric for t in found.trends] == ["latency_s", "host_peak_mb", "throughput_sps"]
    found, calls = called(host, per_probe=False)
    assert not found.per_host_probe and calls == {"latency_s": REGRESSED, "throughput_sps": REGRESSED}

    bark = kept("bark", 1.3, 0.01, late_peak=30.0)
    found, calls = called(bark, per_probe=True)
    assert calls == {"latency_s": REGRESSED, "host_peak_mb": REGRESSED, "throughput_sps": REGRESSED}
    latency = found.trends[0]
    assert [round(p.median, 6) for p in latency.points] == [1.0] * 4 + [1.3] * 3  # seconds at the latest's speed

    store.keep_run(tmp_path / "host", _record("2026-10-31T02:00:00+00:00", 5.0))  # an older suite's: no probe
    runs = kept_runs(tmp_path / "host")[0]
    found, calls = called(runs, per_probe=True)
    assert found.without_probe == 1 and calls == {}
    assert [len(t.points) for t in found.trends] == [7, 8, 7]


def test_a_called_latency_trend_says_which_stage_made_it(tmp_path):
    """Nights 5-7 with the coarse stage 3x slower: the step names coarse and its seconds; the same step outside
    the stages (time between them) says no one stage made it; a series without stage times says nothing more."""

    def kept(folder: str, coarse_late: float, with_stages: bool = True) -> list:
        for day in range(1, 8):
            record = _record(f"2026-11-0{day}T02:00:00+00:00", 1.0 if day < 5 else 1.5)
            stages = {"stage_semantic_s": 0.2, "stage_coarse_s": 0.25 * (coarse_late if day >= 5 else 1.0),
                      "stage_fine_s": 0.2, "stage_codec_s": 0.05}  # fmt: skip
            if with_stages:
                record.results[0].rounds = [{**r, **stages} for r in record.results[0].rounds]
            store.keep_run(tmp_path / folder, record)
        return kept_runs(tmp_path / folder)[0]

    def latency_trend(runs):
        [trend] = history.trends(runs, runs[-1].record, TH, ["latency_s"])
        assert trend.verdict == REGRESSED and trend.why.startswith("stepped +50.0% on 2026-11-05"), trend.why
        return trend.why

    assert latency_trend(kept("coarse", 3.0)).endswith("; most in coarse: +0.500 s")
    assert latency_trend(kept("between", 1.0)).endswith("; outside the stages: the four moved +0.000 s of +0.500 s")
    assert latency_trend(kept("no-stages", 1.0, with_stages=False)).endswith("held for 3 runs")
