"""How far each benchmark's invocations spread (SD over invocations of the log of the median latency) in kept
runs: as measured, divided by the benchmark's own median probe per invocation (the gate before 2026-12-02), and
divided by the invocation's median probe over every benchmark (`INVOCATION_PROBE`). Pooled as root mean squares.

    python docs/cpu-2026-12-02-invocation-probe/spread.py RUN.json [RUN.json ...]
"""

import math
import statistics as st
import sys
from collections import defaultdict
from pathlib import Path

from perf_utils.record import store
from perf_utils.record.metrics import HOST_PROBE, INVOCATION_PROBE

HOW = ("as measured", "own probes", "invocation's probe")


def spreads(record):
    out = defaultdict(list)
    for b in record.measured():
        if not b.invocations or not all(INVOCATION_PROBE in r for r in b.rounds):
            continue
        by_inv = defaultdict(list)
        for r, i in zip(b.rounds, b.invocations, strict=True):
            by_inv[i].append(r)  # labels stay unique across sessions
        if len(by_inv) < 3:
            continue
        rows = []
        for rs in by_inv.values():
            lat = st.median(r["latency_s"] for r in rs)
            rows.append((lat, lat / st.median(r[HOST_PROBE] for r in rs), lat / rs[0][INVOCATION_PROBE]))
        for k, how in enumerate(HOW):
            out[how].append(st.stdev(math.log(row[k]) for row in rows))
    return out


def rms(values):
    return 100 * math.sqrt(st.fmean(v * v for v in values))


total = defaultdict(list)
for path in map(Path, sys.argv[1:]):
    record = store.load(path)
    if found := spreads(record):
        print(f"{record.created[:19]}  " + ", ".join(f"{h} {rms(v):.1f}%" for h, v in found.items()))
        for h, v in found.items():
            total[h] += v
print(f"pooled over {len(total[HOW[0]])} benchmarks: " + ", ".join(f"{h} {rms(v):.2f}%" for h, v in total.items()))
