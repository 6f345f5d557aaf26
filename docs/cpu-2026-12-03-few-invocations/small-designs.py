"""Unchanged against unchanged: how often does the gate's 98% interval exclude "no change", by design (k invocations
x n rounds a side)? It should about 2% of the time. Run from the repository root:

    python docs/cpu-2026-12-03-few-invocations/small-designs.py

Paired: per-trial ratios, invocation SD 1.5%, trial SD 5% (tiny at batch 1 on this VM: ~1.5% and 2-3%, up to 15% in
a noisy hour). Unpaired: invocation SD 5%, round SD 3% (README, "Where the noise lives": processes 5.6%, rounds
3.5%). 400 comparisons per design, bootstrap of 2,000 resamples, the gate's own functions.
"""

import numpy as np

from perf_utils.gate.bootstrap import paired_ratio, ratio_of_medians

rng = np.random.default_rng(1)
N = 400


def groups(k: int, n: int, sd_round: float, sd_inv: float) -> list[list[float]]:
    return [list(np.exp(rng.normal(0, sd_inv) + rng.normal(0, sd_round, n))) for _ in range(k)]


print("paired (trial ratios; invocation SD 1.5%, trial SD 5%)")
for k, n in ((1, 2), (1, 3), (1, 4), (1, 8), (2, 2), (2, 3), (3, 2), (3, 3), (3, 8)):
    ex = 0
    for _ in range(N):
        e = paired_ratio(groups(k, n, 0.05, 0.015), 0.01, 2000)
        ex += e.low > 1 or e.high < 1
    print(f"  k={k} n={n}: excludes 1 in {ex}/{N} ({ex / N:.1%}; nominal 2%)", flush=True)
print("unpaired ratio of medians (invocation SD 5%, round SD 3%)")
for k, n in ((1, 2), (1, 3), (1, 4), (2, 2), (3, 2), (3, 4), (10, 2)):
    ex = 0
    for _ in range(N):
        e = ratio_of_medians(groups(k, n, 0.03, 0.05), groups(k, n, 0.03, 0.05), 0.01, 2000)
        ex += e.low > 1 or e.high < 1
    print(f"  k={k} n={n}: excludes 1 in {ex}/{N} ({ex / N:.1%}; nominal 2%)", flush=True)
