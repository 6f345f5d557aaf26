"""Per-invocation medians of latency / probe for the reference and the runs of a gate-quality --json file."""

import math
import statistics
import sys
from pathlib import Path

from perf_utils.gate import hostspeed
from perf_utils.tools.quality import QualityRuns

q = QualityRuns.load(Path(sys.argv[1]))


def inv_meds(res):
    adj = hostspeed.adjusted(res)
    return [statistics.median(g) for g in adj.groups("latency_s")]


def probe(res):
    return statistics.median(res.values("host_probe_s")) * 1000


ref = q.scenarios[0].reference
rm = inv_meds(ref)
base = statistics.median([v for v in hostspeed.adjusted(ref).values("latency_s")])
print(
    f"reference: {len(rm)} invocations, median per probe {base:.4f}, "
    f"SD(log) {statistics.stdev(map(math.log, rm)):.1%}, probe {probe(ref):.1f} ms"
)
for sc in q.scenarios:
    allm = []
    lv = []
    for r in sc.runs:
        m = inv_meds(r)
        allm += m
        lv.append(statistics.median(hostspeed.adjusted(r).values("latency_s")) / base - 1)
    sd = statistics.stdev(map(math.log, allm)) if len(allm) > 1 else float("nan")
    print(
        f"{sc.label}: {len(sc.runs)} runs, run level vs ref: median {statistics.median(lv):+.1%}, "
        f"SD {statistics.stdev(lv):.1%}; invocation SD(log) {sd:.1%}; "
        f"probes {min(probe(r) for r in sc.runs):.1f}-{max(probe(r) for r in sc.runs):.1f} ms"
    )
