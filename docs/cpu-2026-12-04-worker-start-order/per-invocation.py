"""Each compare-stacks session's per-invocation paired ratios (candidate / pinned, the median of its trials' ratios)
from a `gate-quality --stacks ... --json` file, and their means by which side's worker was started first.
`python per-invocation.py FILE.json[.gz] [pinned-first|candidate-first|alternating]`: the schedule the file was
measured with."""

import gzip
import json
import statistics as st
import sys

path, schedule = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "pinned-first"
data = json.load((gzip.open if path.endswith(".gz") else open)(path, "rt"))
for scenario in data["scenarios"]:
    print(scenario["label"])
    first: dict[str, list[float]] = {"pinned": [], "candidate": []}
    for run, ref in zip(scenario["runs"], scenario["references"], strict=True):
        ratios = []
        for i in sorted(set(run["invocations"])):
            now = [r["latency_s"] for r, j in zip(run["rounds"], run["invocations"], strict=True) if j == i]
            base = [r["latency_s"] for r, j in zip(ref["rounds"], ref["invocations"], strict=True) if j == i]
            ratios.append(st.median(a / b for a, b in zip(now, base, strict=True)))
            side = {"pinned-first": "pinned", "candidate-first": "candidate"}.get(schedule)
            side = side or ("candidate" if i % 2 else "pinned")  # alternating: odd invocations start the candidate
            first[side].append(ratios[-1])
        print("  per invocation", " ".join(f"{r:.3f}" for r in ratios), f" mean {st.mean(ratios):.4f}")
    for side, values in first.items():
        if len(values) > 1:
            se = st.stdev(values) / len(values) ** 0.5
            print(f"  {side} started first: {len(values)} invocations, mean {st.mean(values):.4f} (SE {se:.4f})")
