"""`--bark-remeasure-noisy`: noisy benchmarks measured in more invocations within a time budget.

The decisions are shown on synthetic records with a fake clock (what each re-measure costs is set, not timed);
`Run.measure_more` on one real in-process run; the pytest wiring by one real run against a baseline made too
wide to decide.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
import test_gate
from suite import bench, out, row, without_drift

from perf_utils.gate.compare import REGRESSED, UNCHANGED
from perf_utils.gate.decide import EXIT_OK, GateOptions, judge
from perf_utils.gate.remeasure import invocation_cost, noisy_ids, remeasure_noisy, what_decides
from perf_utils.gate.sessions import SessionDrift
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record import store
from perf_utils.record.metrics import HOST_PROBE
from perf_utils.record.record import FAILED, BenchmarkResult, Remeasured, RunRecord, Schedule

TH = Thresholds(time=0.15, throughput=0.15)


def invocation(level: float, rng: random.Random, rounds: int = 2, sd: float = 0.01) -> list[float]:
    """One invocation's latency rounds: its own level (the between-invocation part) and small round noise."""
    return [level * (1 + rng.gauss(0, sd)) for _ in range(rounds)]


def result(levels: list[float], seed: int, config: str = "fp32", bs: int = 1, host: float | None = None):
    """`host`: the host's slowdown, which multiplies Bark's latency and the host probe (20 ms of fixed work) the
    rounds then carry; None: no probe."""
    rng = random.Random(seed)
    rounds, labels = [], []
    for i, level in enumerate(levels):
        for v in invocation(level, rng):
            rounds.append(_round(v, bs, host))
            labels.append(i)
    return BenchmarkResult(config, bs, "ok", rounds=rounds, invocations=labels, load_s=1.0, warmup=2)


def _round(latency: float, bs: int, host: float | None) -> dict[str, float]:
    if host is None:
        return {"latency_s": latency, "throughput_sps": bs / latency}
    return {"latency_s": latency * host, "throughput_sps": bs / (latency * host), HOST_PROBE: 0.02 * host}


def record(*results: BenchmarkResult) -> RunRecord:
    workload = {"n_tokens": 32, "prompts_sha256": "p", "seed": 0, "sampling": {}}
    rec = RunRecord("hw", "cpu", {"key": "tiny", "kind": "tiny"}, workload, {}, list(results))
    rec.schedule = Schedule(invocations=3, rounds=2, interleaved=True, seed=0)
    return rec


class FakeRun:
    """`Run.measure_more` on a synthetic record: each call adds one invocation at `level` to the asked benchmarks
    and costs `cost_s` on the fake clock."""

    def __init__(
        self, current: RunRecord, level: Callable[[str], float], cost_s: float, clock: list[float], host=None
    ) -> None:
        self.record, self.level, self.cost_s, self.clock, self.host = current, level, cost_s, clock, host
        self.asked: list[list[str]] = []
        self.rng = random.Random(7)

    def measure_more(self, ids: list[str]) -> RunRecord:
        self.asked.append(list(ids))
        self.clock[0] += self.cost_s
        index = 1 + max(i for r in self.record.results for i in r.invocations or [0])
        for bid in ids:
            old = self.record.by_id()[bid]
            part = BenchmarkResult(old.config, old.batch_size, "ok", rounds=[
                _round(v, old.batch_size, self.host) for v in invocation(self.level(bid), self.rng)])  # fmt: skip
            self.record.put(old.appended(part, index))
        return self.record


BASE = record(result([1.00, 1.01, 0.99], seed=1), result([2.0, 2.02, 1.98], seed=2, bs=8))
# The same code measured in three invocations whose levels spread by ~30% (one process slow): the interval of
# bs1's change reaches past 15%, so it is noisy; bs8 is steady and unchanged.
WIDE = record(result([0.92, 1.25, 1.02], seed=3), result([2.0, 2.01, 1.99], seed=4, bs=8))


def steady_level(bid: str) -> float:
    return 1.0


def gate(current: RunRecord):
    return judge(BASE, current, GateOptions(Path("unused"), TH), "baseline")


def test_the_wide_run_starts_noisy_at_the_threshold():
    assert noisy_ids(gate(WIDE.copy())) == ["bs1-fp32"]


def test_more_invocations_of_unchanged_code_decide_noisy_as_unchanged_and_only_the_noisy_benchmark_is_remeasured():
    clock = [0.0]
    fake = FakeRun(WIDE.copy(), {"bs1-fp32": 1.0, "bs8-fp32": 2.0}.__getitem__, cost_s=10.0, clock=clock)
    done = remeasure_noisy(fake.record, gate(fake.record), gate, fake.measure_more, 120.0, clock=lambda: clock[0])
    assert done.outcome.comparison.by_verdict(UNCHANGED) and not noisy_ids(done.outcome)
    assert {tuple(a) for a in fake.asked} == {("bs1-fp32",)}  # bs8 was decided: never measured again
    assert 1 <= done.invocations == len(fake.asked) < 12
    assert done.spent_s == pytest.approx(10.0 * done.invocations)
    assert "bs1-fp32 noisy -> unchanged" in done.lines[0] and f"{done.invocations} more invocation" in done.lines[0]
    assert done.record.by_id()["bs1-fp32"].groups("latency_s")[-1]  # the added invocation is its own group
    assert len(done.record.by_id()["bs1-fp32"].groups("latency_s")) == 3 + done.invocations


def test_a_real_slowdown_hidden_by_a_wide_run_is_called_once_more_invocations_narrow_it():
    """+30% code measured in a run whose invocations spread widely: noisy at first, regressed after more."""
    clock = [0.0]
    slow = record(result([1.0, 1.5, 1.25], seed=5), result([2.0, 2.01, 1.99], seed=6, bs=8))
    assert noisy_ids(gate(slow.copy())) == ["bs1-fp32"]
    fake = FakeRun(slow.copy(), {"bs1-fp32": 1.3}.__getitem__, cost_s=10.0, clock=clock)
    done = remeasure_noisy(fake.record, gate(fake.record), gate, fake.measure_more, 300.0, clock=lambda: clock[0])
    assert [v.id for v in done.outcome.comparison.by_verdict(REGRESSED)] == ["bs1-fp32"]
    assert "bs1-fp32 noisy -> regressed" in done.lines[0]


def test_a_benchmark_only_the_machines_drift_keeps_noisy_is_not_remeasured_and_that_is_said():
    """With `drift` 5%, a tight run +8% over the baseline is noisy however many invocations are added (the drift
    alone spans 0 and 15%): no budget is spent on it. A +30% run spread too widely to decide is still
    re-measured: without the spread, its interval (drift alone) would exclude no change."""
    drifting = Thresholds(time=0.15, throughput=0.15, drift=0.05)

    def drift_gate(current: RunRecord):
        return judge(BASE, current, GateOptions(Path("unused"), drifting), "baseline")

    clock = [0.0]
    offset = record(result([1.08, 1.09, 1.07], seed=8), result([2.0, 2.02, 1.98], seed=9, bs=8))
    fake = FakeRun(offset.copy(), steady_level, cost_s=10.0, clock=clock)
    first = drift_gate(fake.record)
    lat = first.comparison.verdicts[0].metric("latency_s")
    assert lat.verdict == "noisy" and not lat.remeasurable and noisy_ids(first) == []
    done = remeasure_noisy(fake.record, first, drift_gate, fake.measure_more, 120.0, clock=lambda: clock[0])
    assert not fake.asked and done.invocations == 0
    assert done.lines == [
        "not re-measured: bs1-fp32: the machine's drift between the baseline and this run alone keeps their "
        "intervals reaching both no change and the threshold; more invocations cannot decide them"
    ]
    slow = record(result([1.0, 1.6, 1.25], seed=5), result([2.0, 2.01, 1.99], seed=6, bs=8))
    assert noisy_ids(drift_gate(slow)) == ["bs1-fp32"]
    assert drift_gate(slow).comparison.verdicts[0].metric("latency_s").remeasurable


def test_on_a_host_past_the_probe_band_only_the_noisy_more_invocations_could_settle_are_remeasured():
    """The host's probe +60% against the baseline's (band 25%): up to 30% of a change per probe may be the host's.
    Bark +25% per probe, tightly measured, is noisy however many invocations are added (called only past 15% +
    30%, unchanged only under 15%): no budget is spent on it, and that is said. The same host with Bark unchanged
    but measured too widely to decide at 15%: more invocations settle it as unchanged, so it is re-measured."""
    probed = [result([1.00, 1.01, 0.99], seed=1, host=1.0), result([2.0, 2.02, 1.98], seed=2, bs=8, host=1.0)]
    base = record(*probed)

    def host_gate(current: RunRecord):
        return judge(base, current, GateOptions(Path("unused"), TH, per_host_probe=True), "baseline")

    clock = [0.0]
    tight = record(result([1.25, 1.26, 1.24], seed=3, host=1.6), result([2.0, 2.01, 1.99], seed=4, bs=8, host=1.6))
    fake = FakeRun(tight, steady_level, cost_s=10.0, clock=clock, host=1.6)
    first = host_gate(fake.record)
    lat = first.comparison.verdicts[0].metric("latency_s")
    assert (lat.verdict, lat.settles, noisy_ids(first)) == ("noisy", "noisy", []) and lat.why
    done = remeasure_noisy(fake.record, first, host_gate, fake.measure_more, 120.0, clock=lambda: clock[0])
    assert not fake.asked and done.invocations == 0
    assert done.lines == [
        "not re-measured: bs1-fp32: the host's probe moved past the band since the baseline, and their change lies "
        "within what the host may have added; more invocations on this host cannot decide them"
    ]
    assert "bs1-fp32: a run when the host is about as fast as at the baseline" in what_decides(first.comparison)

    wide = record(result([0.92, 1.25, 1.02], seed=3, host=1.6), result([2.0, 2.01, 1.99], seed=4, bs=8, host=1.6))
    fake = FakeRun(wide, {"bs1-fp32": 1.0}.__getitem__, cost_s=10.0, clock=clock, host=1.6)
    first = host_gate(fake.record)
    lat = first.comparison.verdicts[0].metric("latency_s")
    assert (lat.verdict, lat.settles, noisy_ids(first)) == ("noisy", "unchanged", ["bs1-fp32"]) and lat.why
    assert "bs1-fp32: more invocations" in what_decides(first.comparison)
    done = remeasure_noisy(fake.record, first, host_gate, fake.measure_more, 300.0, clock=lambda: clock[0])
    assert fake.asked and "bs1-fp32 noisy -> unchanged" in done.lines[0]


def test_the_verdict_says_what_would_decide_each_noisy_benchmark():
    """Noisy for its own spread: more invocations. Noisy only for the machine's drift since the baseline: the
    paired comparison or a baseline of sessions, never more invocations. Noisy because the host's probe moved past
    the band: a run on a host as fast as the baseline's. A paired session: more trials. Nothing noisy: nothing."""
    drifting = Thresholds(time=0.15, throughput=0.15, drift=0.05)
    current = record(result([0.92, 1.25, 1.02], seed=3), result([2.16, 2.18, 2.14], seed=9, bs=8))
    outcome = judge(BASE, current, GateOptions(Path("unused"), drifting), "baseline")
    comparison = outcome.comparison
    assert [v.verdict for v in comparison.verdicts] == ["noisy", "noisy"] and noisy_ids(outcome) == ["bs1-fp32"]
    said = what_decides(comparison)
    assert said == (
        "to decide the noisy: bs1-fp32: more invocations (--bark-remeasure-noisy SECONDS adds them after a run, or "
        "--bark-invocations N); bs8-fp32: only the machine's drift since the baseline keeps them noisy: measure the "
        "baseline's stack in this session (python -m perf_utils compare-stacks --pinned baseline --candidate "
        "current, paired at 4%), or take the baseline in several sessions (--bark-add-session) so the drift is "
        "measured"
    )
    comparison.verdicts[1].drift = SessionDrift(sessions=5, measured=0.04, used=0.042)  # measured already
    assert what_decides(comparison).endswith("(python -m perf_utils compare-stacks --pinned baseline --candidate "
                                             "current, paired at 4%)")  # fmt: skip
    assert "bs1-fp32: more invocations (a larger --bark-remeasure-noisy budget)" in what_decides(comparison, True)
    for host_bound in comparison.verdicts[0].metrics:  # as `_beyond_the_probe` leaves time and throughput
        host_bound.why, host_bound.settles = "the host ran its probe +40% against the baseline's", "noisy"
    assert "bs1-fp32: a run when the host is about as fast as at the baseline" in what_decides(comparison)
    comparison.paired = True
    assert what_decides(comparison).startswith("to decide bs1-fp32, bs8-fp32: more trials or invocations")
    assert what_decides(gate(BASE.copy()).comparison) is None


def test_the_budget_is_never_overrun_and_what_is_still_noisy_stays_noisy_and_is_said():
    """A benchmark that stays wide (each new invocation far from the last) is re-measured only while one more
    invocation (as long as the last took) fits in the budget; then it stays noisy, never a pass."""
    clock = [0.0]
    levels = iter([1.25, 0.8, 1.3, 0.75, 1.2])
    fake = FakeRun(WIDE.copy(), lambda bid: next(levels), cost_s=30.0, clock=clock)
    done = remeasure_noisy(fake.record, gate(fake.record), gate, fake.measure_more, 100.0, clock=lambda: clock[0])
    assert done.invocations == 3 and done.spent_s <= 100.0  # 3 x 30 s; a fourth would end at 120 s
    assert noisy_ids(done.outcome) == ["bs1-fp32"]
    assert "bs1-fp32 noisy -> noisy" in done.lines[0]
    assert done.lines[1] == (
        "re-measure stopped: bs1-fp32 still noisy; one more invocation takes ~30 s, 10 s of the 100 s budget left"
    )


def test_the_first_invocation_is_estimated_from_the_record_and_not_started_when_it_cannot_fit():
    """The run's record: bs1 (load 1 s, warm-up 2 + 2 rounds at ~1 s), bs8 (~2 s), one load of fp32, and a
    worker's start: ~18 s."""
    assert invocation_cost(WIDE) == pytest.approx(1.0 + 4 * 1.01 + 4 * 2.0 + 5.0, rel=0.05)
    clock = [0.0]
    fake = FakeRun(WIDE.copy(), steady_level, cost_s=10.0, clock=clock)
    done = remeasure_noisy(fake.record, gate(fake.record), gate, fake.measure_more, 15.0, clock=lambda: clock[0])
    assert not fake.asked and done.invocations == 0 and noisy_ids(done.outcome) == ["bs1-fp32"]
    assert done.lines == [
        "re-measure stopped: bs1-fp32 still noisy; one more invocation takes ~18 s, 15 s of the 15 s budget left"
    ]


def test_appended_labels_the_new_invocation_and_a_failed_one_fails_the_benchmark():
    old = result([1.0, 1.0], seed=1)
    part = BenchmarkResult("fp32", 1, "ok", rounds=[{"latency_s": 1.1}], warmup=5)
    new = old.appended(part, 2)
    assert new.invocations == [0, 0, 1, 1, 2] and new.warmup == 5 and len(old.rounds) == 4
    dead = old.appended(BenchmarkResult("fp32", 1, FAILED, "RuntimeError: boom"), 2)
    assert dead.status == FAILED and dead.reason == "RuntimeError: boom (invocation 3, a re-measure)"


def finish_with(tmp: Path, current: RunRecord, measure_more, budget: float):
    """`finish` as pytest calls it, against `BASE` stored under `tmp`."""
    store.write_atomic(store.path_for(tmp / "baselines", BASE.hardware, "tiny"), BASE)
    return test_gate.gate(current, tmp, measure_more, remeasure_s=budget)


def test_finish_remeasures_before_the_verdict_and_keeps_the_run_with_the_added_invocations(tmp_path):
    fake = FakeRun(WIDE.copy(), steady_level, cost_s=0.0, clock=[0.0])
    done, text = finish_with(tmp_path, fake.record, fake.measure_more, 60.0)
    assert done.exit_code == EXIT_OK, text
    assert text.index("re-measured the noisy benchmarks") < text.index("bs1-fp32 ")
    assert "unchanged" in row(text, "bs1-fp32")
    [kept] = (tmp_path / "results").glob("*/run.json")
    stored = store.load(kept).by_id()["bs1-fp32"]
    assert len(stored.groups("latency_s")) == 3 + len(fake.asked)


def test_without_a_budget_or_on_a_saved_run_noisy_stays_noisy_and_says_why(tmp_path):
    fake = FakeRun(WIDE.copy(), steady_level, cost_s=0.0, clock=[0.0])
    done, text = finish_with(tmp_path / "a", fake.record, fake.measure_more, 0.0)
    assert not fake.asked and "NOISY" in row(text, "bs1-fp32") and "re-measure" not in text
    assert "to decide the noisy: bs1-fp32: more invocations (--bark-remeasure-noisy SECONDS adds them" in text
    done, text = finish_with(tmp_path / "b", WIDE.copy(), None, 60.0)
    assert "NOISY" in row(text, "bs1-fp32")
    assert "noisy benchmarks not re-measured: a saved run cannot be measured again here" in text


def test_a_failing_remeasure_leaves_the_verdict_before_it(tmp_path):
    def broken(ids):
        raise OSError("disk full")

    done, text = finish_with(tmp_path, WIDE.copy(), broken, 60.0)
    assert "NOISY" in row(text, "bs1-fp32") and done.exit_code == EXIT_OK
    assert "re-measuring the noisy benchmarks failed (OSError: disk full); verdict before it" in text


def test_ctrl_c_during_a_remeasure_stops_it_and_still_gives_the_verdict_before_it(tmp_path):
    def pressed(ids):
        raise KeyboardInterrupt

    done, text = finish_with(tmp_path, WIDE.copy(), pressed, 60.0)
    assert "NOISY" in row(text, "bs1-fp32") and done.exit_code == EXIT_OK
    assert "re-measuring the noisy benchmarks was interrupted; verdict before it" in text
    assert list((tmp_path / "results").glob("*/run.json"))  # the run was kept before it


def test_run_measure_more_appends_an_invocation_of_the_whole_run(bark_perf_cache, torch_single_thread):
    """The real run loop, in-process: one more invocation for a noisy bs1-fp16 measures every benchmark again (a
    process that measured only some would hold another allocator history), labelled invocation 1, with the new
    trials' ratios."""
    from perf_utils.bark import checkpoints, configs
    from perf_utils.measure.run import Case, Run, RunPlan

    plan = RunPlan(checkpoints.resolve("tiny"), __import__("torch").device("cpu"), n_tokens=8, rounds=2, warmup=1)
    run = Run(plan, check_fidelity=False)
    run.measure_all([Case(configs.get(n), bs) for n in ("fp32", "fp16") for bs in (1, 2)])
    rec = run.measure_more(["bs1-fp16"])
    assert rec.schedule.remeasured == Remeasured(1, ["bs1-fp16"])
    for bid in ("bs1-fp32", "bs1-fp16", "bs2-fp32", "bs2-fp16"):
        assert rec.by_id()[bid].invocations == [0, 0, 1, 1]
    assert all("latency_vs_fp32" in r for r in rec.by_id()["bs1-fp16"].rounds)
    rec = run.measure_more(["bs2-fp16"])
    assert rec.by_id()["bs1-fp32"].invocations == [0, 0, 1, 1, 2, 2]
    assert rec.schedule.remeasured == Remeasured(2, ["bs1-fp16", "bs2-fp16"])


def test_pytest_benchmarks_remeasures_a_benchmark_whose_baseline_is_too_wide_to_decide(healthy, tmp_path):
    """The wiring: the healthy baseline with bs1's rounds spread over 0.1-10x (its interval cannot decide 15%,
    even when this machine runs twice as fast or slow as when the baseline was taken: seen in CI, the host probe
    -50%); `--bark-remeasure-noisy` measures bs1 again in the same session and keeps the run with it."""
    base = healthy.record.copy()
    r = base.by_id()["bs1-fp32"]
    median = r.median("latency_s")
    # Only the timings: the host peak of a small call moves by MBs between processes, and is not the point here.
    spread = (0.1, 10.0, 0.25, 4.0, 0.5, 2.0, 1.0)
    r.rounds = [{"latency_s": median * f, "throughput_sps": 1 / (median * f)} for f in spread]
    r.invocations = None
    store.write_atomic(store.path_for(tmp_path / "baselines", base.hardware, "tiny"), base)
    # Without the CPU's drift: a run a few % off its baseline would be noisy by the drift alone, never re-measured.
    proc = bench(tmp_path, "--bark-configs", "fp32", "--bark-batch-sizes", "1", "--benchmark-compare",
                 "--bark-no-fidelity", "--bark-remeasure-noisy", "20",
                 "--bark-pyproject", str(without_drift(tmp_path)))  # fmt: skip
    text = out(proc)
    assert proc.returncode == 0, text
    assert "re-measured the noisy benchmarks in" in text and "bs1-fp32 noisy ->" in text, text
    [kept] = (tmp_path / "results").glob("*/run.json")
    stored = store.load(kept)
    added = stored.schedule.remeasured.invocations
    assert added >= 1 and max(stored.by_id()["bs1-fp32"].invocations) == added
    assert f"in {added} more invocation" in text
    report = (kept.parent / "report.md").read_text()
    assert f"; {added} invocations added while the gate called `bs1-fp32` noisy (`--bark-remeasure-noisy`)" in report
    assert row(text, "bs1-fp32")
