"""How well each candidate probe tracks Bark's latency across the invocations of probe_candidates.py:

- per invocation: SD of log(latency / probe) over invocations, then of its means over blocks of 6 consecutive
  invocations (a lane run's worth), and the correlation of log latency with log probe;
- "others": the geometric mean of the other two configurations measured in the same invocation (Bark itself as the
  normaliser, which a transformers change would move too: a bound, not a candidate);
- per 10-minute window: the mean of log(latency / probe) against the whole series' (the slow part that a run's
  own invocations cannot see).

    python docs/cpu-2026-12-02-sessions/probe_residuals.py docs/cpu-2026-12-02-sessions/probe-candidates.jsonl
"""

import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

rows = [json.loads(line) for line in Path(sys.argv[1]).read_text().splitlines()]
BLOCK = 6
minutes = (np.array([r["start"] for r in rows]) - rows[0]["start"]) / 60
print(f"{len(rows)} invocations over {minutes[-1]:.0f} min; probe medians (ms):",
      {k: round(1000 * statistics.median(r["probes"][k] for r in rows), 1) for k in rows[0]["probes"]})  # fmt: skip


def sd(x):
    return 100 * statistics.stdev(x)


def blocks(res):
    return [res[i : i + BLOCK].mean() for i in range(0, len(res) - BLOCK + 1, BLOCK)]


def windows(res):
    return [res[(minutes >= a) & (minutes < a + 10)].mean() - res.mean() for a in range(0, int(minutes[-1]) + 1, 10)
            if ((minutes >= a) & (minutes < a + 10)).sum() > 2]  # fmt: skip


combos = {**{k: (k,) for k in rows[0]["probes"]}, "cur+gpt": ("cur", "gpt"), "gpt+mem": ("gpt", "mem")}
for cfg in ("fp32", "fp16", "bf16"):
    lat = np.log([r[cfg]["lat"] for r in rows])
    print(f"{cfg}: raw {sd(lat):.1f}% per invocation; per probe: invocation / block of {BLOCK} / correlation")
    for name, parts in combos.items():
        p = np.log([math.prod(r["probes"][k] for k in parts) ** (1 / len(parts)) for r in rows])
        res = lat - p
        win = " ".join(f"{100 * w:+.1f}" for w in windows(res))
        print(f"  {name:8s} {sd(res):4.1f}% / {sd(blocks(res)):3.1f}% / r {np.corrcoef(lat, p)[0, 1]:.2f};"
              f" 10-min windows {win}")  # fmt: skip
    others = [c for c in ("fp32", "fp16", "bf16") if c != cfg]
    res = lat - np.log([math.sqrt(r[others[0]]["lat"] * r[others[1]]["lat"]) for r in rows])
    print(f"  {'others':8s} {sd(res):4.1f}% / {sd(blocks(res)):3.1f}%; 10-min windows "
          + " ".join(f"{100 * w:+.1f}" for w in windows(res)))  # fmt: skip
print("CPU time / wall time of a round, median:", round(statistics.median(r["cpu_frac"] for r in rows), 4))
