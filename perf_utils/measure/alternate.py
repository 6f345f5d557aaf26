"""Two software stacks in alternating trials: the paired schedule behind `compare-stacks`.

Run one after the other, two stacks' runs differ by whatever the machine did in between (here the machine drifted
by ~10% over six minutes, the size of the regressions to catch). Instead, each invocation starts one serving
worker per stack (`measure.worker.Worker`, each in its stack's Python), warms both up one after the other, then
alternates their trials in a random order: trial k of the candidate is measured seconds from trial k of the
pinned stack, so the ratio of the two rounds cancels the drift, and the gate judges the median of those per-trial
ratios (`gate.compare`, paired). Both records carry the same session id, which is what makes them paired.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from perf_utils.measure.run import Case, Invocation, Run, RunPlan, default_invocations, duration, order
from perf_utils.measure.worker import Worker
from perf_utils.options import RunOptions
from perf_utils.record.record import RunRecord

# Trials per invocation when --bark-rounds is not given. Measured here (tiny, bs1, 32 tokens): the log of one
# trial's ratio scatters by 2-3% within an invocation and the invocations' medians by ~1.5%, so trials are the
# cheap way to a narrow interval (a trial costs ~0.6 s for both sides, an invocation's start ~10 s). With 2 trials
# (the CPU's default rounds) a +5% candidate was caught 4 times in 10 and `noisy` 6 times.
DEFAULT_TRIALS = 8
# Invocations when --bark-invocations is not given: an even number, so each side starts its worker first in half of
# them (`_invocation`). Measured on a 2-core Intel VM (one thread, tiny fp32 bs1, 2026-12-04): at 3 x 8 with the
# pinned side always first, +5% read +4.2% and was caught 4 times in 10; at 4 x 8 alternating, +5.0% and 9 of 10.
DEFAULT_PAIRED_INVOCATIONS = 4


def plan_for_pairs(o: RunOptions) -> RunPlan:
    """The run options' plan, with `DEFAULT_TRIALS` trials per invocation unless --bark-rounds says otherwise, in
    `DEFAULT_PAIRED_INVOCATIONS` unless --bark-invocations does."""
    return replace(
        RunPlan.of(o),
        rounds=o.rounds if o.rounds is not None else DEFAULT_TRIALS,
        invocations=o.invocations
        if o.invocations is not None
        else default_invocations(o.saving_baseline, DEFAULT_PAIRED_INVOCATIONS),
    )


@dataclass(frozen=True)
class Side:
    """One stack: its name, its Python (a venv's, or this one), and the cases it measures (the same ids on both
    sides; gate-quality injects a fault into one side's)."""

    name: str
    python: str
    cases: list[Case]


def alternate(
    plan: RunPlan, sides: list[Side], check_fidelity: bool = True, progress: Callable[[str], None] | None = None
) -> dict[str, RunRecord]:
    """One record per side, measured in `plan.invocations` invocations of `plan.rounds` alternating trials.
    Interrupted (Ctrl-C) after at least one trial both sides finished, it raises `SessionInterrupted` with the
    records of the whole invocations and the trials both sides finished in the cut one (`_invocation`)."""
    session = uuid.uuid4().hex[:12]
    rng = random.Random(plan.seed)
    parts: dict[str, list[Invocation]] = {side.name: [] for side in sides}
    clock = _SessionClock(plan, progress)
    i = 0
    try:
        for i in range(plan.invocations):
            _invocation(plan, sides, i, rng, check_fidelity, clock, parts)
    except KeyboardInterrupt:
        kept = min(len(p) for p in parts.values())
        if not kept:
            raise
        records = _records(plan, sides, {name: p[:kept] for name, p in parts.items()}, session, check_fidelity)
        cut = "the trials both stacks finished in it are kept" if kept > i else "its trials are lost"
        for record in records.values():
            record.mark_interrupted(f"interrupted in invocation {i + 1} of {plan.invocations}: {cut}")
        raise SessionInterrupted(records) from None
    return _records(plan, sides, parts, session, check_fidelity)


class SessionInterrupted(KeyboardInterrupt):
    """Ctrl-C in an alternating session after at least one whole invocation: `records` holds those, per side."""

    def __init__(self, records: dict[str, RunRecord]) -> None:
        super().__init__()
        self.records = records


class _SessionClock:
    """Progress of an alternating session: a line per trial, with the time left in the whole session at the rate
    so far (workers' start and warm-up included). The workers' own per-round lines are not relayed: two sides
    each saying "~34s left in this invocation" a line apart read as a flood (1,152 round lines for 24 benchmarks)."""

    def __init__(self, plan: RunPlan, progress: Callable[[str], None] | None) -> None:
        self.plan, self.progress, self.started = plan, progress, time.perf_counter()

    def trial(self, i: int, t: int, turn: list[str]) -> None:
        if self.progress is None:
            return
        done, total = i * self.plan.rounds + t, self.plan.invocations * self.plan.rounds
        left = f", ~{duration((time.perf_counter() - self.started) / done * (total - done))} left" if done else ""
        self.progress(f"invocation {i + 1}/{self.plan.invocations}: trial {t + 1}/{self.plan.rounds}, "
                      f"{' then '.join(turn)}{left}")  # fmt: skip


def _invocation(
    plan: RunPlan,
    sides: list[Side],
    i: int,
    rng: random.Random,
    check_fidelity: bool,
    clock: _SessionClock,
    parts: dict[str, list[Invocation]],
) -> None:
    """Invocation `i`: a serving worker per side, started and warmed up one after the other (which first alternates
    by invocation), their trials alternating.
    Interrupted during the trials, each worker is interrupted too and gives back what it measured; the trials both
    sides finished are added to `parts` (a trial only one side took has nothing to pair with)."""
    servers: dict[str, Worker] = {}
    finished = 0  # trials both sides took
    try:
        # One after the other: a warm-up is never measured beside another. Which side starts first alternates by
        # invocation: the worker started first read 0.5-1% slower than the other in A/A sessions (2-core Intel VM,
        # one thread, 2026-12-04: -0.65% over 10 sessions with the pinned side first, +0.45% with the candidate's;
        # two bare torch processes do the same, so it is not the suite's). docs/gate-quality.md, "Which side's
        # worker starts first".
        for side in sides if i % 2 == 0 else sides[::-1]:
            relay = _relay(clock.progress, side.name, i, plan)
            servers[side.name] = Worker(side.python, plan, side.cases, i, check_fidelity, relay)
        for t in range(plan.rounds):
            turn = rng.sample([s.name for s in sides], len(sides))
            clock.trial(i, t, turn)
            for name in turn:
                servers[name].trial()
            finished = t + 1
        for side in sides:
            parts[side.name].append(servers[side.name].finish())
    except KeyboardInterrupt:
        if finished and len(servers) == len(sides) and all(len(parts[s.name]) == i for s in sides):
            _keep_cut_trials(servers, finished, parts)
        raise
    finally:
        for server in servers.values():
            server.close()


def _keep_cut_trials(servers: dict[str, Worker], finished: int, parts: dict[str, list[Invocation]]) -> None:
    """Each interrupted worker's first `finished` trials join `parts`, or none does: a trial is kept only with the
    other side's to pair with."""
    cut = {name: server.cut_short() for name, server in servers.items()}
    if all(part is not None for part in cut.values()):
        for name, part in cut.items():
            assert part is not None
            parts[name].append(_first_trials(part, finished))


def _first_trials(part: Invocation, n: int) -> Invocation:
    """The invocation with each benchmark's first `n` rounds; benchmarks left with none are left out."""
    results = []
    for r in part.results:
        if r.rounds:
            r.rounds = r.rounds[:n]
        if r.rounds or not r.ran:
            results.append(r)
    return replace(part, results=results)


def _records(
    plan: RunPlan, sides: list[Side], parts: dict[str, list[Invocation]], session: str, check_fidelity: bool
) -> dict[str, RunRecord]:
    records = {}
    for side in sides:
        run = Run(plan, check_fidelity=check_fidelity)
        run.record_invocations(order(side.cases), parts[side.name])
        assert run.record.schedule is not None
        run.record.schedule.session, run.record.schedule.alternated = session, [s.name for s in sides]
        records[side.name] = run.record
    return records


def _relay(progress: Callable[[str], None] | None, side: str, i: int, plan: RunPlan) -> Callable[[str], None] | None:
    if progress is None:
        return None
    return lambda line: progress(f"[{side}] invocation {i + 1}/{plan.invocations}: {line}")
