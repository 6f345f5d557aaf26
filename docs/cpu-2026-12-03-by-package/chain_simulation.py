"""Synthetic `compare-stacks --by-package` sessions: 4 stacks (3 steps) in alternating trials, judged step by step
as the command judges them (`compare_result(..., paired=True)` at the paired threshold).

The machine's speed wanders from trial to trial (`drift`, shared by every stack in a trial), each worker process has
its own level (`process`), each call its own noise (`call`); `levels` is each stack's true latency. Run:
`python docs/cpu-2026-12-03-by-package/chain_simulation.py` (about 1 min); its output is in chain_simulation.txt.
"""

import random

from perf_utils.gate.compare import IMPROVED, REGRESSED, compare_result
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record.record import OK, BenchmarkResult

TH = Thresholds().for_pairs()


def chain(rng, levels_by_stack, k=3, m=8, drift=0.05, process=0.01, call=0.02):
    rounds = {s: [] for s in range(len(levels_by_stack))}
    for _ in range(k):
        lv = {s: rng.gauss(1, process) for s in rounds}
        for _ in range(m):
            machine = rng.gauss(1, drift)
            for s in rounds:
                rounds[s].append({"latency_s": machine * lv[s] * levels_by_stack[s] * rng.gauss(1, call)})
    inv = [i for i in range(k) for _ in range(m)]
    return [BenchmarkResult("fp32", 1, OK, rounds=rounds[s], invocations=inv) for s in rounds]


def run(levels, n=300, **kw):
    any_false = total_called = 0
    per_step = [dict() for _ in levels[1:]]
    for seed in range(n):
        res = chain(random.Random(seed), levels, **kw)
        vs = [
            compare_result(a, b, TH, paired=True).metric("latency_s").verdict
            for a, b in zip(res, res[1:], strict=False)
        ]
        for d, v in zip(per_step, vs, strict=False):
            d[v] = d.get(v, 0) + 1
        tot = compare_result(res[0], res[-1], TH, paired=True).metric("latency_s").verdict
        total_called += tot in (REGRESSED, IMPROVED)
        truth = [b / a != 1 for a, b in zip(levels, levels[1:], strict=False)]
        any_false += any(v in (REGRESSED, IMPROVED) and not t for v, t in zip(vs, truth, strict=False))
    print(
        levels,
        kw,
        f"sessions with a false step call: {any_false}/{n}; total called {total_called}/{n}; per step {per_step}",
    )


run([1, 1, 1, 1])
run([1, 1, 1.06, 1.06])
run([1, 1, 1, 1], call=0.10, process=0.02)
run([1, 1, 1.10, 1.10], call=0.10, process=0.02)
