"""A/A intervals that exclude "no change", and what is caught, on synthetic invocations (tests/test_bootstrap.py's
model: each invocation's level, then its rounds), with the widening off (0) and at F-test levels. From the
repository root: python docs/cpu-2026-12-03-few-invocations/simulate.py 0,0.001"""

import random
import sys

sys.path.insert(0, "tests")

import test_bootstrap as t  # noqa: E402

from perf_utils.gate import bootstrap  # noqa: E402
from perf_utils.gate.bootstrap import paired_ratio, ratio_of_medians  # noqa: E402

ORIGINAL = bootstrap.invocations_dominate
BETWEEN = (0.005, 0.015, 0.05, 0.10, 0.35)


def dominate_at(level: float):
    return (lambda groups, alpha=level: ORIGINAL(groups, level)) if level > 0 else (lambda groups, alpha=0: False)


def caught(estimate, trials: int = 200) -> int:
    return sum(estimate(random.Random(seed)).low > 1.0 for seed in range(trials))


for level in [float(x) for x in sys.argv[1].split(",")]:
    bootstrap.invocations_dominate = dominate_at(level)
    paired = [t.excluding_one(t.paired_aa, k=3, m=8, between=b, within=0.03) for b in BETWEEN]
    against = [t.excluding_one(t.run_against_baseline_aa, k=3, m=8, between=b, within=0.03) for b in BETWEEN]
    five = [caught(lambda r, b=b: paired_ratio(t.invocations(r, 1.05, k=3, m=8, between=b, within=0.035)))
            for b in (0.015, 0.005)]  # fmt: skip
    ten = caught(lambda r: ratio_of_medians(t.invocations(r, 1.0, k=10, m=2, between=0.03, within=0.01),
                                            t.invocations(r, 1.10, k=3, m=2, between=0.03, within=0.01)))  # fmt: skip
    print(f"F test at {level}: A/A excluding no change, of 200, invocations' levels apart by {BETWEEN}: paired "
          f"{paired}, 3 against a 10-invocation baseline {against}; paired +5% caught (levels 1.5%, 0.5% apart): "
          f"{five}; +10% against a 10-invocation baseline (3% apart, 2 rounds): {ten}")  # fmt: skip
