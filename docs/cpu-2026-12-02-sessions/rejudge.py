"""The runs of a gate-quality --json file judged again against a baseline of several sessions, as `--benchmark-compare`
judges (latency per host probe, pyproject's CPU thresholds, `--bark-time-threshold` as given), with the baseline
cut to its first 1, 2, ... K sessions: what the measured drift changes.

    python docs/cpu-2026-12-02-sessions/rejudge.py GQ.json BASELINE.json [TIME_THRESHOLD]
"""

import sys
from pathlib import Path

from perf_utils.gate import hostspeed, sessions
from perf_utils.gate.compare import compare_result
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record import store
from perf_utils.tools.quality import QualityRuns

runs = QualityRuns.load(Path(sys.argv[1]))
baseline = store.load(Path(sys.argv[2]))
th = Thresholds.from_pyproject(Path("pyproject.toml"), "cpu").with_time(float(sys.argv[3]) if sys.argv[3:] else 0.07)


def first_sessions(result, k):
    return result.only([i for i, s in enumerate(result.sessions or [0] * len(result.rounds)) if s < k])


for k in range(1, len(baseline.sessions or [baseline.created]) + 1):
    cells = []
    for sc in runs.scenarios:
        ref = hostspeed.adjusted(first_sessions(baseline.by_id()[f"bs{sc.batch_size}-{sc.reference.config}"], k))
        drift = sessions.measured(ref, th)
        counts = {}
        for r in sc.runs:
            m = compare_result(ref, hostspeed.adjusted(r), th, False, True).metric("latency_s")
            counts[m.verdict] = counts.get(m.verdict, 0) + 1
        said = f"drift used {drift.used:.1%} (measured {drift.measured:.1%})" if drift else f"drift {th.drift:.0%}"
        cells.append(f"{sc.label.split(' (')[0]}: " + ", ".join(f"{v} {n}" for v, n in sorted(counts.items())))
    print(f"first {k} session(s), {said}: " + " | ".join(cells))
