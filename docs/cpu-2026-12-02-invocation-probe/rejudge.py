"""Kept runs judged against a stored baseline as `--benchmark-compare` judges them (pyproject's CPU thresholds,
latency per host probe), twice: by each benchmark's own probes (the gate before 2026-12-02) and by its
invocation's median probe over every benchmark (`INVOCATION_PROBE`, derived for older records when read).

    python docs/cpu-2026-12-02-invocation-probe/rejudge.py BASELINE.json RUN.json [RUN.json ...]
"""

import math
import statistics
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from perf_utils.gate.decide import GateOptions, judge
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record import store
from perf_utils.record.metrics import INVOCATION_PROBE

th = Thresholds.from_pyproject(Path("pyproject.toml"), "cpu")


def own_probes_only(record):
    out = record.copy()
    out.results = [replace(r, rounds=[{k: v for k, v in x.items() if k != INVOCATION_PROBE} for x in r.rounds])
                   for r in record.results]  # fmt: skip
    return out


baseline_path = Path(sys.argv[1])
baseline = store.load(baseline_path)
totals = {"own": Counter(), "invocation": Counter()}
moves = {"own": [], "invocation": []}
for path in map(Path, sys.argv[2:]):
    run = store.load(path)
    cells = []
    sides = {"own": (own_probes_only(baseline), own_probes_only(run)), "invocation": (baseline, run)}
    for how, (b, r) in sides.items():
        outcome = judge(b, r, GateOptions(baseline_path.parent, th), baseline_path)
        verdicts = [v for v in outcome.comparison.verdicts if v.metric("latency_s") is not None]
        counts = Counter(v.verdict for v in verdicts)
        totals[how] += counts
        moves[how] += [math.log1p(v.metric("latency_s").change) for v in verdicts]
        changes = " ".join(f"{v.metric('latency_s').change:+.0%}" for v in verdicts)
        cells.append(f"{how}: {dict(sorted(counts.items()))} [{changes}]")
    print(f"{run.created[:19]}  " + "  |  ".join(cells))
for how, counts in totals.items():
    rms = math.sqrt(statistics.fmean(m * m for m in moves[how]))
    print(f"all runs, by {how} probes: {dict(sorted(counts.items()))}; latency changes {rms:.1%} (RMS of the logs)")
