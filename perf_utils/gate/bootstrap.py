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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BOOTSTRAP_SAMPLES = 2000
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


def ratio_of_medians(
    base: list[list[float]], now: list[list[float]], alpha: float = 0.01, samples: int = BOOTSTRAP_SAMPLES
) -> RatioEstimate:
    """`base` and `now`: rounds grouped by invocation. The interval is [alpha, 1 - alpha] of the bootstrap."""
    base = [g for g in base if g]
    now = [g for g in now if g]
    if not base or not now:
        raise ValueError("a ratio needs rounds on both sides")
    b_all, n_all = np.concatenate(base), np.concatenate(now)
    b_med, n_med = float(np.median(b_all)), float(np.median(n_all))
    if b_med == 0:
        return RatioEstimate(1.0 if n_med == 0 else float("inf"), float("nan"), float("nan"))
    rng = np.random.default_rng(SEED)
    b = _resampled_medians(base, samples, rng)
    n = _resampled_medians(now, samples, rng)
    ratios = n / np.where(b == 0, np.nan, b)
    low, high = np.nanquantile(ratios, [alpha, 1 - alpha])
    return RatioEstimate(n_med / b_med, float(low), float(high))


def paired_ratio(ratios: list[list[float]], alpha: float = 0.01, samples: int = BOOTSTRAP_SAMPLES) -> RatioEstimate:
    """`ratios`: now / base of each pair of rounds measured in the same trial, grouped by invocation. The median
    ratio, with the interval of the same hierarchical bootstrap (invocations, then pairs)."""
    ratios = [g for g in ratios if g]
    if not ratios:
        raise ValueError("a paired ratio needs pairs")
    medians = _resampled_medians(ratios, samples, np.random.default_rng(SEED))
    low, high = np.nanquantile(medians, [alpha, 1 - alpha])
    return RatioEstimate(float(np.median(np.concatenate(ratios))), float(low), float(high))
