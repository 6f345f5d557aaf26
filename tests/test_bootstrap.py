"""The gate's statistics on synthetic rounds with known between- and within-invocation noise: false alarms and
detection by simulation (fixed seeds), why the invocation level matters, and determinism."""

from __future__ import annotations

import random

from perf_utils.gate import bootstrap
from perf_utils.gate.bootstrap import invocations_dominate, paired_ratio, ratio_of_medians
from perf_utils.gate.compare import IMPROVED, NOISY, REGRESSED, compare_metric
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record.metrics import METRICS

LATENCY = METRICS["latency_s"]
TH = Thresholds(time=0.05)  # what a quiet dedicated runner could use


def invocations(rng: random.Random, level: float, k: int = 5, m: int = 5, between: float = 0.03, within: float = 0.01):
    """k invocations of m rounds: each invocation has its own level (CV `between`), rounds scatter around it."""
    out = []
    for _ in range(k):
        inv = level * rng.gauss(1, between)
        out.append([inv * rng.gauss(1, within) for _ in range(m)])
    return out


def outcomes(slowdown: float, trials: int = 100, **noise) -> dict[str, int]:
    counts: dict[str, int] = {}
    for seed in range(trials):
        rng = random.Random(seed)
        base, now = invocations(rng, 1.0, **noise), invocations(rng, 1.0 + slowdown, **noise)
        verdict = compare_metric(LATENCY, base, now, TH).verdict
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts


def test_unchanged_code_rarely_alarms_when_most_noise_is_between_invocations():
    """A/A with a 3% between-invocation CV (what separate processes showed here) and 1% within: at most 2 in
    100 called either way."""
    counts = outcomes(0.0)
    assert counts.get(REGRESSED, 0) + counts.get(IMPROVED, 0) <= 2, counts


def test_a_ten_percent_slowdown_is_caught():
    counts = outcomes(0.10)
    assert counts.get(REGRESSED, 0) >= 90, counts


def test_pooling_rounds_as_if_independent_is_overconfident():
    """The old mistake: the same data treated as one invocation gives 98% intervals that exclude 1 in about one
    A/A run of six (where 2 in 100 is the promise); the hierarchical interval keeps the promise."""
    pooled_excludes = hierarchical_excludes = 0
    for seed in range(100):
        rng = random.Random(seed)
        base, now = invocations(rng, 1.0), invocations(rng, 1.0)
        flat = ratio_of_medians([sum(base, [])], [sum(now, [])])
        hier = ratio_of_medians(base, now)
        pooled_excludes += not flat.contains(1.0)
        hierarchical_excludes += not hier.contains(1.0)
    assert pooled_excludes >= 10, pooled_excludes
    assert hierarchical_excludes <= 5, hierarchical_excludes


def test_a_wide_spread_is_noisy_not_unchanged():
    """20% within-run noise and one invocation: a +3% change cannot be told from +5% or more: noisy."""
    counts = outcomes(0.03, trials=20, k=1, m=5, between=0.0, within=0.20)
    assert counts.get(NOISY, 0) >= 18, counts
    assert counts.get(REGRESSED, 0) == 0, counts


def test_the_interval_is_deterministic():
    rng = random.Random(1)
    base, now = invocations(rng, 1.0), invocations(rng, 1.1)
    assert ratio_of_medians(base, now) == ratio_of_medians(base, now)
    assert ratio_of_medians(base, now).low > 1.0


def excluding_one(estimate, trials: int = 200, **noise) -> int:
    """In how many of `trials` A/A sessions the interval excludes "no change"."""
    out = 0
    for seed in range(trials):
        rng = random.Random(seed)
        out += not estimate(rng, **noise).contains(1.0)
    return out


def paired_aa(rng: random.Random, **noise):
    return paired_ratio(invocations(rng, 1.0, **noise))  # per-trial ratios of one stack against itself


def run_against_baseline_aa(rng: random.Random, **noise):
    return ratio_of_medians(invocations(rng, 1.0, **{**noise, "k": 10}), invocations(rng, 1.0, **noise))


SEPARATE_LEVELS = {"k": 3, "m": 8, "between": 0.35, "within": 0.03}  # a host peak: each process's allocator state


def test_three_invocations_whose_levels_differ_are_not_taken_for_a_change(monkeypatch):
    """Three invocations on the same side of "no change" happen in a quarter of A/A sessions; where their levels
    differ far more than their rounds (a per-process host peak), the bootstrap alone then excludes no change
    (47 of 200 paired sessions, 15 of 200 runs against a 10-invocation baseline). Widened as Student's t over
    3 invocations, it comes close to the 98% promise (7 and 2 of 200; at most 8 allowed)."""
    assert excluding_one(paired_aa, **SEPARATE_LEVELS) <= 8
    assert excluding_one(run_against_baseline_aa, **SEPARATE_LEVELS) <= 8
    monkeypatch.setattr(bootstrap, "invocations_dominate", lambda groups, alpha=0: False)
    assert excluding_one(paired_aa, **SEPARATE_LEVELS) >= 30  # what the bootstrap alone says: 15% and more
    assert excluding_one(run_against_baseline_aa, **SEPARATE_LEVELS) >= 12  # 10 baseline invocations help


def test_where_rounds_explain_the_invocations_a_paired_five_percent_is_still_caught():
    """compare-stacks' latency here: per-trial ratios scatter 1.8-5.4%, invocations barely beyond that
    (docs/gate-quality.md). The interval over invocations is not taken then, so +5% is caught as before."""
    caught = 0
    for seed in range(100):
        est = paired_ratio(invocations(random.Random(seed), 1.05, k=3, m=8, between=0.005, within=0.035))
        caught += est.low > 1.0
    assert caught >= 80, caught


def test_invocations_dominate_only_where_it_can_be_told():
    rng = random.Random(3)
    assert invocations_dominate(invocations(rng, 1.0, k=3, m=8, between=0.35, within=0.03))
    assert not invocations_dominate(invocations(rng, 1.0, k=3, m=8, between=0.0, within=0.03))
    assert not invocations_dominate([[1.0, 1.1, 0.9]])  # one invocation
    assert not invocations_dominate([[1.0], [2.0], [3.0]])  # one round each: the rounds are the invocations
    assert not invocations_dominate([[0.0, 1.0], [2.0, 3.0]])  # a value not above 0: no logs
    assert invocations_dominate([[2.0, 2.0], [3.0, 3.0]]) and not invocations_dominate([[2.0, 2.0], [2.0, 2.0]])
