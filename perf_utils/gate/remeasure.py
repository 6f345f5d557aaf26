"""`noisy` verdicts re-measured within a time budget (`--bark-remeasure-noisy SECONDS`).

A benchmark is `noisy` when its interval still reaches a change of the threshold's size. The interval is built
from invocations first (`gate.bootstrap`), so it narrows as invocations are added: the end-of-run path may buy
more of them, one invocation of the run at a time (`Run.measure_more` says why the whole run), judging again
after each, while the budget still holds one more. What is still noisy when the budget is spent stays `noisy`
and is said; it never becomes a pass. More invocations cannot cancel drift between the baseline's day and today
(docs/gate-quality.md, "Where the noise lives"): they decide a wide interval, not an offset.

Torch-free: the measuring is a callback from whoever ran the run (`measure.run.Run.measure_more`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from perf_utils.gate.compare import NOISY, BenchmarkVerdict, Comparison
from perf_utils.gate.decide import GateOutcome
from perf_utils.record.record import RunRecord

PROCESS_START_S = 5.0  # a worker process's start and imports, on top of what the record says an invocation costs


@dataclass
class Remeasured:
    record: RunRecord
    outcome: GateOutcome
    invocations: int = 0  # added
    spent_s: float = 0.0
    lines: list[str] = field(default_factory=list)


def _noisy(outcome: GateOutcome | None) -> list[BenchmarkVerdict]:
    return [] if outcome is None or outcome.comparison is None else outcome.comparison.by_verdict(NOISY)


SPREAD, DRIFT, HOST = "spread", "drift", "host"
# What the run says of the noisy that more invocations cannot decide, by what keeps them noisy.
NOT_REMEASURED = {
    DRIFT: "the machine's drift between the baseline and this run alone keeps their intervals reaching both no "
    "change and the threshold; more invocations cannot decide them",
    HOST: "the host's probe moved past the band since the baseline, and their change lies within what the host "
    "may have added; more invocations on this host cannot decide them",
}


def _kept_noisy_by(v: BenchmarkVerdict) -> str:
    """What keeps `v` noisy: its own spread while any noisy gated metric is `remeasurable` (more invocations could
    decide it); otherwise the host's speed past the probe band where a metric says so (`why`), else the machine's
    drift alone."""
    noisy = [m for m in v.metrics if m.info.gated and m.verdict == NOISY]
    if not noisy or any(m.remeasurable for m in noisy):
        return SPREAD
    return HOST if any(m.why for m in noisy) else DRIFT


def _kept_by(noisy: list[BenchmarkVerdict], cause: str) -> list[BenchmarkVerdict]:
    return [v for v in noisy if _kept_noisy_by(v) == cause]


def noisy_ids(outcome: GateOutcome | None) -> list[str]:
    """The noisy benchmarks more invocations could decide: not those only the machine's drift, or a host past the
    probe band, keeps noisy."""
    return [v.id for v in _kept_by(_noisy(outcome), SPREAD)]


def what_decides(comparison: Comparison, remeasured: bool = False) -> str | None:
    """For a person reading the verdict: what would decide its `noisy` benchmarks, by why each is noisy (its own
    spread, the machine's drift since the baseline, a host whose speed moved past the probe band, or a paired
    session's few trials); None when none is noisy. `remeasured`: `--bark-remeasure-noisy` already ran."""
    noisy = comparison.by_verdict(NOISY)
    if not noisy:
        return None
    if comparison.paired:
        return (f"to decide {_ids(noisy)}: more trials or invocations per session (after --: --bark-rounds N, "
                "--bark-invocations N)")  # fmt: skip
    spread, drift, host = (_kept_by(noisy, cause) for cause in (SPREAD, DRIFT, HOST))
    parts = []
    if spread:
        more = "a larger --bark-remeasure-noisy budget" if remeasured else (
            "--bark-remeasure-noisy SECONDS adds them after a run, or --bark-invocations N")  # fmt: skip
        parts.append(f"{_ids(spread)}: more invocations ({more})")
    if drift:
        remedy = (f"measure the baseline's stack in this session (python -m perf_utils compare-stacks --pinned "
                  f"baseline --candidate current, paired at {comparison.thresholds.paired:.0%})")  # fmt: skip
        if all(v.drift is None for v in drift):  # pyproject's drift, assumed: a baseline of sessions measures it
            remedy += ", or take the baseline in several sessions (--bark-add-session) so the drift is measured"
        parts.append(f"{_ids(drift)}: only the machine's drift since the baseline keeps them noisy: {remedy}")
    if host:
        parts.append(f"{_ids(host)}: a run when the host is about as fast as at the baseline (see the probe above)")
    return "to decide the noisy: " + "; ".join(parts)


def _ids(verdicts: list[BenchmarkVerdict]) -> str:
    return ", ".join(v.id for v in verdicts)


def invocation_cost(record: RunRecord) -> float:
    """Seconds one more invocation of the run should take, from what it recorded: each configuration's load, and
    every benchmark's warm-up plus rounds at its median latency."""
    measured = record.measured()
    rounds = (record.schedule.rounds if record.schedule else None) or 1
    loads = {r.config: r.load_s or 0.0 for r in measured}
    calls = sum(((r.warmup or 0) + rounds) * (r.median("latency_s") or 0.0) for r in measured)
    return sum(loads.values()) + calls + (0.0 if record.in_caller else PROCESS_START_S)


def remeasure_noisy(
    record: RunRecord,
    outcome: GateOutcome,
    judge: Callable[[RunRecord], GateOutcome],
    measure_more: Callable[[list[str]], RunRecord],
    budget_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> Remeasured:
    """While `outcome` calls benchmarks noisy, one more invocation of the run at a time, judged again by `judge`,
    while one more invocation fits in what is left of `budget_s` (the first is estimated from the record, the
    next from the last one's duration)."""
    before = noisy_ids(outcome)
    done = Remeasured(record, outcome)
    for cause, why in NOT_REMEASURED.items():
        if budget_s > 0 and (bound := _kept_by(_noisy(outcome), cause)):
            done.lines.append(f"not re-measured: {_ids(bound)}: {why}")
    if not before or budget_s <= 0:
        return done
    started, last = clock(), None
    while ids := noisy_ids(done.outcome):
        left = budget_s - (clock() - started)
        cost = last if last is not None else invocation_cost(done.record)
        if cost > left:
            done.lines.append(
                f"re-measure stopped: {', '.join(ids)} still noisy; one more invocation takes ~{cost:.0f} s, "
                f"{max(left, 0):.0f} s of the {budget_s:.0f} s budget left"
            )
            break
        t0 = clock()
        done.record = measure_more(ids)
        last = clock() - t0
        done.invocations += 1
        done.outcome = judge(done.record)
    done.spent_s = clock() - started
    if done.invocations:
        after = {v.id: v.verdict for v in done.outcome.comparison.verdicts} if done.outcome.comparison else {}
        moved = ", ".join(f"{i} noisy -> {after.get(i, '?')}" for i in before)
        done.lines.insert(
            0,
            f"re-measured the noisy benchmarks in {done.invocations} more invocation"
            f"{'s' if done.invocations > 1 else ''} of the run ({done.spent_s:.0f} s of the {budget_s:.0f} s budget): "
            + moved,
        )
    return done
