"""How sure is a change? A hierarchical bootstrap of the ratio of medians (Kalibera and Jones, "Rigorous
benchmarking in reasonable time", ISMM 2013).

Rounds of one invocation (one process, one model load) share that invocation's state: its memory layout, clock
and cache state, the load on the machine during those seconds. Treating every round as an independent sample (what
a Mann-Whitney U over rounds does) makes p-values far too small when most of the variance lies between
invocations. Resampling invocations first, then rounds within each chosen invocation, puts the uncertainty where
it lives. Two stacks measured in alternating trials (`compare-stacks`) are paired instead: each trial's ratio
cancels what drifted between trials, and the same resampling of those ratios gives the interval. With one
invocation per side the between-invocation spread cannot be seen at all: the interval is then
only as honest as the rounds are independent, which is why runs take several invocations.

The bootstrap cannot say more than its few invocations do: with 3 whose levels all differ from the baseline's by
more than their rounds scatter, every resample lies on the same side, and "no change" falls outside the interval
in a quarter of unchanged runs (seen: a host peak, whose level is each process's allocator state, called +30%
regressed between two stacks, 2026-12-03). So where the invocations of a side differ by more than their rounds
explain (`invocations_dominate`), the interval is widened as Student's t over that many invocations would be,
the classical answer for a mean of few clusters; where they do not, the rounds count as the bootstrap has them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

BOOTSTRAP_SAMPLES = 2000
# How sure the F test must be that the invocations' levels differ beyond their rounds before the rounds stop
# counting (a preliminary test: below it the rounds are pooled, as the bootstrap has them). Strict, because t over
# 3 invocations is wide: a host peak's process levels pass it by far (F in the hundreds), while worker processes
# whose latency levels differ by ~1.5% (compare-stacks here, docs/gate-quality.md) rarely do, and keep +5% caught.
DOMINANCE = 0.001
# Up to how many invocations a side's bootstrap is widened where they dominate. The percentile interval over k
# clusters is about their range: with 3, all lie on one side of "no change" in a quarter of unchanged runs; with 5,
# in 6%, and widening there (t(4) / z: x1.8) halved the +10% a 5 x 5 run caught against 3% between invocations.
FEW_INVOCATIONS = 4
SEED = 20131021  # fixed: the same records always get the same interval


@dataclass(frozen=True)
class RatioEstimate:
    ratio: float  # median(now) / median(base), all rounds pooled
    low: float  # the interval's bounds for the ratio (level 1 - 2 * alpha)
    high: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _resampled_medians(groups: list[list[float]], samples: int, rng: np.random.Generator) -> np.ndarray:
    """The median of `samples` hierarchical resamples: invocations with replacement, then rounds within each."""
    k = len(groups)
    sizes = np.array([len(g) for g in groups])
    width = int(sizes.max())
    padded = np.full((k, width), np.nan)  # invocations may hold different numbers of rounds
    for i, g in enumerate(groups):
        padded[i, : len(g)] = g
    picks = rng.integers(0, k, size=(samples, k))
    # Rounds within each chosen invocation, as many as it had; the padding of shorter ones is left out.
    chosen_sizes = sizes[picks][..., None]  # (samples, k, 1)
    draws = (rng.random((samples, k, width)) * chosen_sizes).astype(int)
    values = np.where(np.arange(width) < chosen_sizes, padded[picks[..., None], draws], np.nan)
    return np.nanmedian(values.reshape(samples, -1), axis=1)


def invocations_dominate(groups: list[list[float]], alpha: float = DOMINANCE) -> bool:
    """Whether the invocations' levels differ by more than their rounds' scatter explains: a one-way analysis of
    variance of the logs, F test at `alpha`. False where it cannot be told (one invocation, one round each, a value
    not above 0)."""
    groups = [g for g in groups if g]
    if len(groups) < 2 or not _positive(groups):
        return False
    logs = [np.log(np.asarray(g, dtype=float)) for g in groups]
    within_df = sum(len(x) - 1 for x in logs)
    if within_df < 1:
        return False
    grand = float(np.concatenate(logs).mean())
    between = sum(len(x) * (float(x.mean()) - grand) ** 2 for x in logs) / (len(logs) - 1)
    within = sum(float(((x - x.mean()) ** 2).sum()) for x in logs) / within_df
    if within == 0:
        return between > 0
    return between / within > stats.f.ppf(1 - alpha, len(logs) - 1, within_df)


def _positive(groups: list[list[float]]) -> bool:
    return all(math.isfinite(v) and v > 0 for g in groups for v in g)


def _widening(groups: list[list[float]], alpha: float) -> float:
    """How much wider a side's bootstrap spread is taken where its few invocations dominate: as Student's t over its
    `k` invocations rather than a normal over endless ones, t(k - 1) / z, and sqrt(k / (k - 1)) for the
    bootstrap's own shortfall with few clusters (its variance is (k - 1) / k of the sample's). 1 elsewhere. The
    bootstrap keeps giving the spread, so a single far invocation weighs as little as it does in the median."""
    k = len(groups)
    if not 2 <= k <= FEW_INVOCATIONS or not invocations_dominate(groups):
        return 1.0
    return float(stats.t.ppf(1 - alpha, k - 1) / stats.norm.ppf(1 - alpha)) * math.sqrt(k / (k - 1))


def _widened(resampled: np.ndarray, point: float, factor: float) -> np.ndarray:
    """Resampled medians moved `factor` times as far from `point` on the log scale."""
    if factor == 1.0 or point <= 0:
        return resampled
    with np.errstate(divide="ignore", invalid="ignore"):
        return point * np.exp(factor * np.log(resampled / point))


def ratio_of_medians(
    base: list[list[float]], now: list[list[float]], alpha: float = 0.01, samples: int = BOOTSTRAP_SAMPLES
) -> RatioEstimate:
    """`base` and `now`: rounds grouped by invocation. The interval is [alpha, 1 - alpha] of the bootstrap, each
    side's spread widened where its invocations dominate (`_widening`)."""
    base = [g for g in base if g]
    now = [g for g in now if g]
    if not base or not now:
        raise ValueError("a ratio needs rounds on both sides")
    b_all, n_all = np.concatenate(base), np.concatenate(now)
    b_med, n_med = float(np.median(b_all)), float(np.median(n_all))
    if b_med == 0:
        return RatioEstimate(1.0 if n_med == 0 else float("inf"), float("nan"), float("nan"))
    rng = np.random.default_rng(SEED)
    b = _widened(_resampled_medians(base, samples, rng), b_med, _widening(base, alpha))
    n = _widened(_resampled_medians(now, samples, rng), n_med, _widening(now, alpha))
    ratios = n / np.where(b == 0, np.nan, b)
    low, high = np.nanquantile(ratios, [alpha, 1 - alpha])
    return RatioEstimate(n_med / b_med, float(low), float(high))


def paired_ratio(ratios: list[list[float]], alpha: float = 0.01, samples: int = BOOTSTRAP_SAMPLES) -> RatioEstimate:
    """`ratios`: now / base of each pair of rounds measured in the same trial, grouped by invocation. The median
    ratio, with the interval of the same hierarchical bootstrap (invocations, then pairs), widened as for
    Student's t over them where they dominate."""
    ratios = [g for g in ratios if g]
    if not ratios:
        raise ValueError("a paired ratio needs pairs")
    point = float(np.median(np.concatenate(ratios)))
    medians = _widened(
        _resampled_medians(ratios, samples, np.random.default_rng(SEED)), point, _widening(ratios, alpha)
    )
    low, high = np.nanquantile(medians, [alpha, 1 - alpha])
    return RatioEstimate(point, float(low), float(high))
