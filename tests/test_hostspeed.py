"""Latency in units of the host's speed: a machine that is slower for every program is told apart from Bark
being slower, on synthetic records with known machine and code changes (no timing of this machine involved)."""

from __future__ import annotations

import argparse
import json
import random
import re
from dataclasses import replace
from pathlib import Path

import pytest

from perf_utils import options
from perf_utils.gate import hostspeed
from perf_utils.gate.compare import NOISY, REGRESSED, UNCHANGED, compare, compare_result, host_moved
from perf_utils.gate.decide import GateOptions, judge
from perf_utils.gate.thresholds import Thresholds, ThresholdsError
from perf_utils.record import store
from perf_utils.record.metrics import HOST_PROBE, INVOCATION_PROBE
from perf_utils.record.record import BenchmarkResult, RunRecord, Schedule
from perf_utils.report.table import verdict_rows
from perf_utils.tools.quality import Scenario, judged

TH = Thresholds(time=0.05, throughput=0.05)


def result(machine: float = 1.0, code: float = 1.0, seed: int = 0, probe: bool = True) -> BenchmarkResult:
    """3 invocations x 4 rounds of a 1 s call (0.5% noise) on a machine `machine` times slower, with Bark
    `code` times slower; the probe (20 ms of fixed work) slows with the machine only."""
    rng = random.Random(seed)
    rounds, invocations = [], []
    for inv in range(3):
        for _ in range(4):
            slow = machine * (1 + rng.gauss(0, 0.005))
            r = {"latency_s": code * slow, "throughput_sps": 1 / (code * slow)}
            if probe:
                r[HOST_PROBE] = 0.02 * slow
            rounds.append(r)
            invocations.append(inv)
    return BenchmarkResult("fp32", 1, "ok", rounds=rounds, invocations=invocations)


def record(res: BenchmarkResult) -> RunRecord:
    return RunRecord("cpu-test", "cpu", {"key": "tiny"}, {}, {}, [res])


def test_a_slower_machine_regresses_raw_latency_but_not_latency_per_probe():
    base, now = result(seed=1), result(machine=1.12, seed=2)
    assert compare_result(base, now, TH).verdict == REGRESSED  # what the raw gate says
    adjusted = compare_result(hostspeed.adjusted(base), hostspeed.adjusted(now), TH)
    assert adjusted.verdict == UNCHANGED
    assert abs(hostspeed.probe_change(record(base), record(now)) - 0.12) < 0.01


def test_bark_slower_on_the_same_machine_regresses_both_ways():
    base, now = result(seed=1), result(code=1.12, seed=2)
    adjusted = compare_result(hostspeed.adjusted(base), hostspeed.adjusted(now), TH)
    assert adjusted.verdict == REGRESSED and abs(adjusted.metric("latency_s").change - 0.12) < 0.01
    assert abs(hostspeed.probe_change(record(base), record(now))) < 0.01


def test_the_hosts_speed_is_taken_per_invocation_so_one_probes_own_noise_stays_out():
    """Invocation i runs on a machine 1 + 0.1 i times slower; within it the probes scatter +-10% round to round
    while the call does not. Per invocation the machine comes out exactly and nothing is added."""
    rounds, labels = [], []
    for inv in range(3):
        level = 1 + 0.1 * inv
        for jitter in (0.9, 1.1, 0.9, 1.1):
            times = {"latency_s": level, "stage_fine_s": level, "rtf": level}
            rates = {"throughput_sps": 1 / level, "fine_tok_per_s": 1 / level}
            rounds.append({**times, **rates, HOST_PROBE: 0.02 * level * jitter, "host_peak_mb": level})
            labels.append(inv)
    adjusted = hostspeed.adjusted(BenchmarkResult("fp32", 1, "ok", rounds=rounds, invocations=labels), speed=0.02)
    # every time and rate the host moves, a stage's and its tokens per second too, so they read as latency does
    for metric in ("latency_s", "throughput_sps", "stage_fine_s", "fine_tok_per_s", "rtf"):
        assert all(abs(v - 1.0) < 1e-9 for v in adjusted.values(metric)), (metric, adjusted.values(metric))
    assert [r[HOST_PROBE] for r in adjusted.rounds] == [r[HOST_PROBE] for r in rounds]  # the probe itself kept
    assert adjusted.values("host_peak_mb") == [r["host_peak_mb"] for r in rounds]  # memory as measured


def with_invocation_probe(res: BenchmarkResult, host: float, own: float) -> BenchmarkResult:
    """`res` on a host `host` times slower for the whole invocation (every benchmark's probes say so: the
    invocation's median, `INVOCATION_PROBE`), while this benchmark's own few probes read `own` times."""
    rounds = [{**r, HOST_PROBE: 0.02 * own, INVOCATION_PROBE: 0.02 * host} for r in res.rounds]
    return replace(res, rounds=rounds)


def test_the_hosts_speed_is_the_whole_invocations_probe_not_one_benchmarks_few():
    """Seen in the default tier (2026-12-02 07:00): bs1-bf16's own 2 probes per invocation read the host 9.5%
    slower, the 16 of its invocations 40% slower, as did every other benchmark's. Judged by its own probes, Bark
    read 25% slower (a false regression); by the invocation's, unchanged. The band is read from the same probe."""
    base = with_invocation_probe(result(seed=1), host=1.0, own=1.0)
    now = with_invocation_probe(result(machine=1.4, seed=2), host=1.4, own=1.1)
    by_invocation = compare_result(hostspeed.adjusted(base), hostspeed.adjusted(now), TH, per_probe=True)
    assert by_invocation.verdict == UNCHANGED and abs(by_invocation.metric("latency_s").change) < 0.01
    assert abs(host_moved(base, now, TH) - 0.4) < 1e-9  # beyond the band: from the invocation's probe
    own_only = [replace(r, rounds=[{k: v for k, v in x.items() if k != INVOCATION_PROBE} for x in r.rounds])
                for r in (base, now)]  # fmt: skip
    by_own = compare_result(*(hostspeed.adjusted(r) for r in own_only), TH, per_probe=True)
    assert by_own.verdict == REGRESSED and by_own.metric("latency_s").change > 0.2  # what the gate said before
    assert host_moved(*own_only, TH) is None  # +10%: inside the band, so nothing warned


def test_an_older_record_gets_its_invocations_probe_where_invocations_match_across_benchmarks(tmp_path):
    """Schema 4 stored each round's own probe only. Read again, a plain run's rounds get their invocation's
    median over every benchmark; a session whose benchmarks have different invocation labels (they cannot be
    matched) keeps its own probes, and the gate judges those by their own as before."""

    def rounds(probes: list[float]) -> list[dict[str, float]]:
        return [{"latency_s": 1.0, HOST_PROBE: p} for p in probes]

    a = BenchmarkResult("fp32", 1, "ok", rounds=rounds([1, 2, 10, 20]), invocations=[0, 0, 1, 1], sessions=[0] * 4)
    b = BenchmarkResult("fp16", 1, "ok", rounds=rounds([3, 4, 30, 40, 5, 6]), invocations=[0, 0, 1, 1, 2, 2],
                        sessions=[0, 0, 0, 0, 1, 1])  # fmt: skip
    c = BenchmarkResult("bf16", 1, "ok", rounds=rounds([7, 8]), invocations=[3, 3], sessions=[1, 1])
    workload = {"n_tokens": 8, "prompts_sha256": "ab", "seed": 0, "sampling": {}}
    checkpoint = {"key": "tiny", "kind": "tiny"}
    old = RunRecord("hw", "cpu", checkpoint, workload, {"packages": {}}, [a, b, c], sessions=["s0", "s1"])
    data = json.loads(json.dumps(old.to_dict()))
    data["schema_version"] = 4
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    read = store.load(path)
    assert "rounds carry their invocation's median host probe over every benchmark" in read.migrated
    by_id = read.by_id()
    assert [r[INVOCATION_PROBE] for r in by_id["bs1-fp32"].rounds] == [2.5, 2.5, 25.0, 25.0]
    assert [r.get(INVOCATION_PROBE) for r in by_id["bs1-fp16"].rounds] == [2.5, 2.5, 25.0, 25.0, None, None]
    assert all(INVOCATION_PROBE not in r for r in by_id["bs1-bf16"].rounds)  # session 1: labels 2 and 3 differ
    assert hostspeed.adjusted(by_id["bs1-bf16"]).values("latency_s") == [1 / 7.5, 1 / 7.5]  # its own probes


def test_a_run_without_the_probe_is_not_adjusted():
    assert hostspeed.adjusted(result(probe=False)) is None
    assert hostspeed.probe_change(record(result(probe=False)), record(result())) is None


def test_the_gate_says_when_the_machine_moved_and_what_bark_did_in_its_units(tmp_path):
    base, now = record(result(seed=1)), record(result(machine=1.12, seed=2))
    outcome = judge(base, now, GateOptions(tmp_path, TH), tmp_path / "baseline.json")
    (note,) = [m for m in outcome.messages if "host probe" in m]
    probe = re.search(r"host probe \(fixed CPU work after each round\) \+(\d+\.\d)% slower than at the baseline", note)
    assert probe and 10 < float(probe.group(1)) < 14, note
    bench = re.search(r"bs1-fp32 \+(\d+\.\d)% \(([+-]\d+\.\d)% / probe\)", note)
    assert bench and 10 < float(bench.group(1)) < 14 and abs(float(bench.group(2))) < 1.5, note
    assert outcome.comparison.verdicts[0].verdict == REGRESSED  # the note informs; the verdict stands
    quiet = judge(base, record(result(seed=3)), GateOptions(tmp_path, TH), tmp_path / "baseline.json")
    assert not any("host probe" in m for m in quiet.messages)


def test_gate_quality_judges_the_time_scenarios_per_probe_too():
    reference = result(seed=1)
    scenarios = [
        Scenario("unchanged (false alarms)", 1, "any", reference, [result(machine=1.12, seed=s) for s in (2, 3)]),
        Scenario("slowdown +12%", 1, "latency_s", reference, [result(code=1.12, seed=s) for s in (4, 5)]),
    ]
    rows = {r.label: r for r in judged(scenarios, TH)}
    assert rows["unchanged (false alarms)"].flagged == 2
    assert rows["unchanged (false alarms), latency / host probe"].flagged == 0
    assert rows["slowdown +12%, latency / host probe"].flagged == 2
    assert compare(record(reference), record(reference), TH).verdicts[0].verdict == UNCHANGED
    on_cpu = [r.label for r in judged(scenarios, replace(TH, time_per_host_probe=True))]
    assert "unchanged (false alarms), latency / host probe (the setting here)" in on_cpu  # which row the gate is


def test_asked_to_judge_per_host_probe_the_gate_calls_the_machine_unchanged_and_bark_regressed(tmp_path):
    base = record(result(seed=1))
    per_probe = GateOptions(tmp_path, TH, per_host_probe=True)
    machine = judge(base, record(result(machine=1.12, seed=2)), per_probe, tmp_path / "baseline.json")
    assert machine.comparison.verdicts[0].verdict == UNCHANGED
    assert any(m.startswith("latency and throughput judged per host probe (this run's probe +1") for m in
               machine.messages), machine.messages  # fmt: skip
    latency = machine.comparison.verdicts[0].metric("latency_s")
    assert abs(latency.baseline - 1.0) < 0.01 and abs(latency.current - 1.0) < 0.02  # seconds, at the baseline's speed
    assert machine.baseline is base  # the report draws what was measured
    code = judge(base, record(result(code=1.12, seed=2)), per_probe, tmp_path / "baseline.json")
    assert code.comparison.verdicts[0].verdict == REGRESSED


def test_beyond_the_band_a_change_the_host_could_explain_is_noisy_and_a_larger_one_still_called(tmp_path):
    """Measured here (docs/gate-quality.md, "When the host itself moved"): with the probe +44-158% slower, Bark per
    probe read -1% to +29% slower; a neighbour's load slows Bark more than the probe. Beyond the band (25%) up to half
    the probe's move may be the host's: smaller changes are noisy, with why; larger ones are still called."""
    base = record(result(seed=1))
    busy = record(result(machine=2.0, code=1.2, seed=2))  # unchanged Bark, a host the probe no longer tracks
    opts = GateOptions(tmp_path, TH, per_host_probe=True)
    outcome = judge(base, busy, opts, "b.json")
    [v] = outcome.comparison.verdicts
    latency = v.metric("latency_s")
    assert v.verdict == NOISY and not outcome.comparison.failed and abs(latency.change - 0.2) < 0.02
    why = r"its host probe \+(99|100)%, past the 25% band: "
    assert re.match(why + r"up to (50|49)% may be the host's", latency.why or ""), latency.why
    assert v.metric("throughput_sps").verdict == NOISY
    assert "may be the host's" in verdict_rows(outcome.comparison)[0][-1]
    assert any("beyond 25% the probe stops tracking Bark" in m for m in outcome.messages), outcome.messages
    # a change larger than the host's possible share (5% + 50%) is still called
    broken = judge(base, record(result(machine=2.0, code=1.8, seed=2)), opts, "b.json")
    assert broken.comparison.verdicts[0].verdict == REGRESSED
    # a host within the band decides as before; so does a wider band
    assert (
        judge(base, record(result(machine=1.2, code=1.2, seed=2)), opts, "b.json").comparison.verdicts[0].verdict
        == REGRESSED
    )
    wide = GateOptions(tmp_path, replace(TH, host_probe_band=1.5), per_host_probe=True)
    assert judge(base, busy, wide, "b.json").comparison.verdicts[0].verdict == REGRESSED
    # judged as measured, the band does not apply: raw latency is what the user asked for
    raw = judge(base, busy, GateOptions(tmp_path, TH, per_host_probe=False), "b.json")
    assert raw.comparison.verdicts[0].verdict == REGRESSED
    # gate-quality's per-probe row judges as the gate does: noisy, not flagged
    sc = Scenario("unchanged (false alarms)", 1, "any", result(seed=1), [result(machine=2.0, code=1.2, seed=3)])
    row = {r.label: r for r in judged([sc], TH)}["unchanged (false alarms), latency / host probe"]
    assert (row.flagged, row.noisy) == (0, 1)


def test_the_runs_probe_line_reads_the_probe_the_rows_are_judged_by(tmp_path):
    """Seen 2026-12-03 09:05: the line above the table said the probe moved +21.2% (the raw rounds' median) and every
    row "its host probe +33%" (the invocations' medians, what the gate divides by). One probe, one number."""
    base = with_invocation_probe(result(seed=1), host=1.0, own=1.0)
    now = with_invocation_probe(result(machine=1.4, code=1.1, seed=2), host=1.4, own=1.1)
    assert abs(hostspeed.probe_change(record(base), record(now)) - 0.4) < 1e-9
    outcome = judge(record(base), record(now), GateOptions(tmp_path, TH, per_host_probe=True), "b.json")
    (line,) = [m for m in outcome.messages if m.startswith("latency and throughput judged per host probe")]
    assert "(this run's probe +40.0% against the baseline's" in line and "beyond 25%" in line, line
    assert "its host probe +40%" in (outcome.comparison.verdicts[0].metric("latency_s").why or "")


def test_asked_to_judge_per_host_probe_against_an_older_baseline_says_it_cannot(tmp_path):
    old = record(result(seed=1, probe=False))
    outcome = judge(old, record(result(seed=2)), GateOptions(tmp_path, TH, per_host_probe=True), "b.json")
    assert "note: time judged as measured, not per host probe: the baseline has no host probe" in outcome.messages[0]
    assert outcome.comparison.verdicts[0].verdict == UNCHANGED


def test_the_device_kinds_thresholds_decide_unless_the_option_says_otherwise(tmp_path):
    """pyproject's `time_per_host_probe` (on for the CPU here) is the default; `--bark-time-per-host-probe off`
    judges in seconds as measured."""
    base, machine = record(result(seed=1)), record(result(machine=1.12, seed=2))
    by_kind = replace(TH, time_per_host_probe=True)
    default = judge(base, machine, GateOptions(tmp_path, by_kind), "b.json")
    assert default.comparison.verdicts[0].verdict == UNCHANGED
    assert any(m.startswith("latency and throughput judged per host probe") for m in default.messages)
    off = judge(base, machine, GateOptions(tmp_path, by_kind, per_host_probe=False), "b.json")
    assert off.comparison.verdicts[0].verdict == REGRESSED
    assert any(m.startswith("note: this machine ran the host probe") for m in off.messages)  # still told
    project = Path(__file__).resolve().parents[1] / "pyproject.toml"
    assert Thresholds.from_pyproject(project, "cpu").time_per_host_probe
    assert not Thresholds.from_pyproject(project, "cuda").time_per_host_probe  # the probe times the host only


def test_a_paired_session_is_judged_on_its_ratios_not_per_probe(tmp_path):
    """compare-stacks' alternating trials cancel the host's speed already; dividing by the probe would only add
    its noise."""
    base, now = record(result(seed=1)), record(result(code=1.12, seed=2))
    for r in (base, now):
        r.schedule = Schedule(invocations=3, session="s1")
    outcome = judge(base, now, GateOptions(tmp_path, TH, per_host_probe=True), "the pinned stack")
    assert outcome.comparison.paired and outcome.comparison.verdicts[0].verdict == REGRESSED
    assert not any(m.startswith("latency and throughput judged per host probe") for m in outcome.messages)
    assert any("not per host probe: they cancel it" in m for m in outcome.messages)
    # nor told that the machine moved: its two sides ran on one host, trial by trial (seen 2026-12-03 09:28, a
    # legacy-stack session: "the host probe +3.3% slower than at the baseline ... may be the machine's")
    slower_side = record(result(machine=1.12, code=1.12, seed=2))
    slower_side.schedule = Schedule(invocations=3, session="s1")
    quiet = judge(base, slower_side, GateOptions(tmp_path, TH, per_host_probe=False), "the pinned stack")
    assert quiet.comparison.paired and not any("host probe" in m for m in quiet.messages), quiet.messages


def test_the_switch_in_pyproject_must_be_true_or_false(tmp_path):
    p = tmp_path / "pyproject.toml"
    p.write_text("[tool.bark-perf.thresholds.cpu]\ntime_per_host_probe = 1\n")
    with pytest.raises(ThresholdsError, match=r"thresholds\.cpu\]\.time_per_host_probe must be true or false"):
        Thresholds.from_pyproject(p, "cpu")
    p.write_text("[tool.bark-perf.thresholds]\ntime = true\n")
    with pytest.raises(ThresholdsError, match=r"time must be a number"):
        Thresholds.from_pyproject(p)
    assert options.on_off("OFF") is False and options.on_off("on") is True
    with pytest.raises(argparse.ArgumentTypeError, match="on or off"):
        options.on_off("yes")
