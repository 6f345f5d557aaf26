"""A baseline taken in several sessions (`--bark-add-session`): how sessions join (`store.with_session`), what the
gate measures of the machine's drift from them (`gate.sessions`), and what that changes in its verdicts. Synthetic
rounds with known session, invocation and round spreads (fixed seeds); no model involved."""

import math
import random
from dataclasses import replace

import pytest

from perf_utils.gate import sessions
from perf_utils.gate.compare import NOISY, REGRESSED, UNCHANGED, compare
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record import store
from perf_utils.record.record import BenchmarkResult, RunRecord
from perf_utils.report.table import rule_line
from perf_utils.tools.quality import Scenario, judged

TH = Thresholds(time=0.07, throughput=0.07, drift=0.05)
WORKLOAD = {"n_tokens": 32, "prompts_sha256": "ab", "seed": 0, "sampling": {}}
STACK = {"torch": "2.13.0+cpu", "transformers": "5.24.0", "optimum": "2.3.0", "accelerate": "1.15.0"}


def session(level, day, seed, configs=("fp32",), invocations=6, rounds=6, invocation_sd=0.01, packages=STACK):
    """One run (a session) at `level` seconds: each invocation off by `invocation_sd` (log), each round by 0.5%."""
    rng = random.Random(seed)
    results = []
    for config in configs:
        rows, labels = [], []
        for inv in range(invocations):
            inv_level = level * math.exp(rng.gauss(0, invocation_sd))
            for _ in range(rounds):
                lat = inv_level * math.exp(rng.gauss(0, 0.005))
                rows.append({"latency_s": lat, "throughput_sps": 1 / lat, "host_peak_mb": 100.0})
                labels.append(inv)
        results.append(BenchmarkResult(config, 1, "ok", rounds=rows, counts={"semantic_tokens": 32},
                                       invocations=labels))  # fmt: skip
    return RunRecord("hw", "cpu", {"key": "tiny", "kind": "tiny"}, dict(WORKLOAD), {"packages": dict(packages)},
                     results, created=f"2026-12-{day:02d}T04:00:00+00:00")  # fmt: skip


def baseline_of(levels, **kw):
    """A baseline of one session per level, a day apart, joined as `--bark-add-session` joins them."""
    out = None
    for day, level in enumerate(levels, start=1):
        out = store.with_session(out, session(level, day, seed=day, **kw), store.Path("b.json"))
    return out


def test_sessions_join_with_their_own_labels_and_survive_the_schema(tmp_path):
    first, second = session(1.0, 1, seed=1), session(1.1, 2, seed=2)
    assert store.with_session(None, first, tmp_path) is first  # the first session is the run itself
    joined = store.with_session(first, second, tmp_path)
    r = joined.results[0]
    assert joined.sessions == [first.created, second.created]
    assert r.sessions == [0] * 36 + [1] * 36
    assert len(set(r.invocations)) == 12  # invocation labels stay unique across sessions
    assert r.rounds == first.results[0].rounds + second.results[0].rounds
    path = tmp_path / "b.json"
    store.write_atomic(path, joined)
    back = store.load(path).results[0]
    levels = [statistics_median(g) for g in back.session_groups("latency_s")]
    assert [len(g) for g in back.session_groups("latency_s")] == [6, 6]
    assert levels[1] / levels[0] == pytest.approx(1.1, rel=0.02)


def statistics_median(groups):
    values = sorted(v for g in groups for v in g)
    return values[len(values) // 2]


def test_a_session_of_another_stack_or_work_is_refused_naming_the_file_and_what_differs(tmp_path):
    path = tmp_path / "baselines" / "hw" / "tiny.json"
    old = session(1.0, 1, seed=1)
    with pytest.raises(store.BaselineError, match=r"transformers differs: baseline 5\.24\.0, now 5\.25\.0") as info:
        store.with_session(old, session(1.0, 2, seed=2, packages={**STACK, "transformers": "5.25.0"}), path)
    assert str(path) in str(info.value) and "--bark-save-baseline" in str(info.value)
    other_work = session(1.0, 2, seed=2)
    other_work.results[0].counts = {"semantic_tokens": 31}
    with pytest.raises(store.BaselineError, match="bs1-fp32's work differs"):
        store.with_session(old, other_work, path)
    other_workload = replace(session(1.0, 2, seed=2), workload={**WORKLOAD, "n_tokens": 64})
    with pytest.raises(store.BaselineError, match="workload differs"):
        store.with_session(old, other_workload, path)


def test_only_the_newest_sessions_are_kept_and_a_benchmark_not_run_today_keeps_its_own():
    joined = baseline_of([1.0 + d / 10 for d in range(store.MAX_SESSIONS + 2)])
    assert len(joined.sessions) == store.MAX_SESSIONS
    assert joined.sessions[0].startswith("2026-12-03")  # days 1 and 2 dropped
    r = joined.results[0]
    assert sorted(set(r.sessions)) == list(range(store.MAX_SESSIONS))
    assert min(r.values("latency_s")) > 1.15  # the rounds of the dropped sessions went with them
    both = baseline_of([1.0], configs=("fp32", "bf16"))
    today = session(1.0, 5, seed=5)  # fp32 only
    joined = store.with_session(both, today, store.Path("b.json"))
    bf16 = joined.by_id()["bs1-bf16"]
    assert bf16.sessions == [0] * 36 and joined.by_id()["bs1-fp32"].sessions == [0] * 36 + [1] * 36
    two = baseline_of([1.0, 1.02], configs=("fp32", "bf16"))
    replaced = store.merged(two, session(1.0, 9, seed=9))  # --bark-save-baseline of fp32 alone
    assert replaced.by_id()["bs1-fp32"].sessions is None  # fp32 is today's run, one session
    assert replaced.by_id()["bs1-bf16"].sessions == [0] * 36 + [1] * 36 and replaced.sessions == two.sessions


def test_the_drift_is_measured_from_the_sessions_and_shrunk_toward_pyprojects():
    """Levels 2% apart (SD of the sessions' logs) with invocations spread 1%: the spread beyond the invocations
    is measured; with few sessions the drift used stays near pyproject's, with many it follows the measurement."""
    assert sessions.measured(session(1.0, 1, seed=1).results[0], TH) is None  # one session: pyproject's drift
    offsets = [0.0, 0.02, -0.02, 0.01, -0.01, 0.03, -0.03, 0.0]
    steady = sessions.measured(baseline_of([math.exp(o) for o in offsets]).results[0], TH)
    sd = math.sqrt(sum(o * o for o in offsets) / (len(offsets) - 1))
    assert steady.sessions == 8
    assert steady.measured == pytest.approx(sd, abs=0.005)
    assert steady.used < TH.drift / 2 + 0.005  # 8 steady sessions outweigh the prior's 4
    few = sessions.measured(baseline_of([math.exp(o) for o in offsets[:2]]).results[0], TH)
    assert few.used == pytest.approx(TH.drift, rel=0.25)  # two sessions barely move it
    wide = sessions.measured(baseline_of([math.exp(3 * o) for o in offsets]).results[0], TH)
    assert wide.measured == pytest.approx(3 * sd, abs=0.01) and wide.used > TH.drift  # a wider machine: wider
    alone = replace(TH, drift_prior_sessions=0)
    exact = sessions.measured(baseline_of([math.exp(o) for o in offsets]).results[0], alone)
    assert exact.used == pytest.approx(exact.measured * math.sqrt(1 + 1 / 8))


def test_a_steady_machine_measured_over_sessions_lets_the_gate_call_ten_percent():
    """The same +10% run: against one session, pyproject's 5% drift keeps it noisy; against eight sessions whose
    levels held within 2%, the measured drift is smaller and it is called. Unchanged runs stay unchanged; on a
    machine whose sessions spread 6%, +10% stays noisy: honest either way. The summary line says which."""
    offsets = [0.0, 0.02, -0.02, 0.01, -0.01, 0.015, -0.015, 0.0]
    steady = baseline_of([math.exp(o) for o in offsets])
    one = baseline_of([1.0])
    slower, same = session(1.10, 20, seed=20), session(1.0, 21, seed=21)
    assert compare(one, slower, TH).verdicts[0].verdict == NOISY
    called = compare(steady, slower, TH)
    assert called.verdicts[0].verdict == REGRESSED and called.failed
    assert called.verdicts[0].drift.sessions == 8
    assert "measured over the baseline's 8 sessions" in rule_line(called)
    assert "pyproject)" in rule_line(compare(one, slower, TH))
    assert compare(steady, same, TH).verdicts[0].verdict == UNCHANGED
    wide = baseline_of([math.exp(3 * o) for o in offsets])
    assert compare(wide, slower, TH).verdicts[0].verdict == NOISY
    assert compare(wide, same, TH).verdicts[0].verdict in (UNCHANGED, NOISY)


def test_gate_quality_judges_against_a_baseline_of_sessions_with_the_drift_it_measured():
    """gate-quality's stored reference holding several sessions: its runs are judged with the measured drift (the
    +10% runs are called on this steady synthetic machine) and the table says what was measured."""
    reference = baseline_of([math.exp(o) for o in (0.0, 0.01, -0.01, 0.005, -0.005, 0.0)]).results[0]
    runs = [session(1.10, 20 + i, seed=20 + i).results[0] for i in range(3)]
    rows = judged([Scenario("slowdown +10%", 1, "latency_s", reference, runs)], TH)
    assert rows[0].flagged == 3
    [note] = [r.label for r in rows if "sessions" in r.label]
    assert note.startswith("(the reference holds 6 sessions: their levels spread") and "pyproject's 5%" in note
