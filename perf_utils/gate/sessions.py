"""How far the machine's level moves between sessions, measured from a baseline taken in several
(`--bark-add-session`, `record.store.with_session`) rather than assumed (pyproject's `drift`).

A run is one session; its interval from the bootstrap sees only the spread between its own invocations. The level of a
whole session moves too (measured here: 4-8% between runs minutes to days apart, docs/gate-quality.md, "A stored
baseline from another day"), and a baseline of one session cannot show by how much on this machine. A baseline of K
sessions can: the spread of their levels, less what their own invocations explain, is the session-to-session SD. With
few sessions that estimate is itself noisy, so it is shrunk toward pyproject's drift, which counts as
`Thresholds.drift_prior_sessions` sessions' worth of evidence (a scaled-inverse-chi-square prior). The drift added to
the run's interval is then that SD times sqrt(1 + 1/K): today's session moves by it, the baseline's level (the mean of
K sessions) by 1/sqrt(K) of it. With one session this is pyproject's drift exactly. torch-free.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace

from perf_utils.gate.thresholds import Thresholds
from perf_utils.record.record import BenchmarkResult


@dataclass(frozen=True)
class SessionDrift:
    sessions: int  # of the baseline, for this benchmark
    measured: float  # SD of the sessions' log levels beyond what their own invocations explain
    used: float  # the drift added to this benchmark's time intervals (`Thresholds.drift` for it)


def _level(groups: list[list[float]]) -> tuple[float, float]:
    """A session's log level (the log median of its rounds) and that level's variance from the spread of its
    invocations' medians (0 with one invocation: its rounds share too much to say)."""
    rounds = [v for g in groups for v in g]
    medians = [math.log(statistics.median(g)) for g in groups]
    within = statistics.variance(medians) / len(medians) if len(medians) > 1 else 0.0
    return math.log(statistics.median(rounds)), within


def measured(baseline: BenchmarkResult, th: Thresholds, metric: str = "latency_s") -> SessionDrift | None:
    """The drift between sessions for `baseline`'s benchmark; None when it holds fewer than two sessions."""
    sessions = [g for g in baseline.session_groups(metric) if all(v > 0 for x in g for v in x)]
    if len(sessions) < 2:
        return None
    levels = [_level(g) for g in sessions]
    k = len(levels)
    between = max(statistics.variance([lv for lv, _ in levels]) - statistics.fmean(w for _, w in levels), 0.0)
    prior = th.drift**2 / 2  # pyproject's drift is the SD of the offset between two sessions: sqrt(2) of one's
    weight = th.drift_prior_sessions
    per_session = (weight * prior + (k - 1) * between) / (weight + k - 1)
    return SessionDrift(k, math.sqrt(between), math.sqrt(per_session * (1 + 1 / k)))


def thresholds_for(baseline: BenchmarkResult, th: Thresholds) -> tuple[Thresholds, SessionDrift | None]:
    """`th` with the drift measured over `baseline`'s sessions, when it holds several; else `th` as it was."""
    drift = measured(baseline, th)
    return (th, None) if drift is None else (replace(th, drift=drift.used), drift)
