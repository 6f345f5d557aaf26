"""The levels (latency per host probe, median over rounds) of each session of a baseline and of the runs of
gate-quality --json files, fp32 relative to the baseline's first session: where the runs sat among the sessions.

    python docs/cpu-2026-12-02-sessions/levels.py BASELINE.json GQ1.json [GQ2.json ...]
"""

import statistics
import sys
from pathlib import Path

from perf_utils.gate import hostspeed
from perf_utils.record import store
from perf_utils.tools.quality import QualityRuns


def level(result):
    return statistics.median(hostspeed.adjusted(result).values("latency_s"))


baseline = store.load(Path(sys.argv[1]))
stamps = baseline.sessions or [baseline.created]
first = {}
for r in baseline.measured():
    adj = hostspeed.adjusted(r)
    levels = [statistics.median(v for g in s for v in g) for s in adj.session_groups("latency_s")]
    first[r.id] = levels[0]
    said = ", ".join(f"{t[5:16]} {lv / levels[0] - 1:+.1%}" for t, lv in zip(stamps, levels, strict=True))
    print(r.id, "sessions:", said)
for path in sys.argv[2:]:
    for sc in QualityRuns.load(Path(path)).scenarios:
        key = f"bs{sc.batch_size}-{sc.reference.config}"
        runs = " ".join(f"{level(r) / first[key] - 1:+.1%}" for r in sc.runs)
        print(f"{Path(path).name} {sc.label.split(' (')[0]}: {runs}")
