"""Per trial index, the mean ratio of the side whose worker was started first to the other, over every invocation of
the first scenario of a `gate-quality --stacks ... --json` file measured with alternating start order (odd
invocations start the candidate first): is the first-started worker slower in every trial, or only the first?
`python pertrial.py FILE.json[.gz]`"""

import gzip
import json
import math
import statistics as st
import sys

path = sys.argv[1]
data = json.load((gzip.open if path.endswith(".gz") else open)(path, "rt"))
scenario = data["scenarios"][0]
logs: dict[int, list[float]] = {}  # trial index -> log(first-started / second-started)
pairs: dict[int, list[tuple[float, float]]] = {}
for run, ref in zip(scenario["runs"], scenario["references"], strict=True):
    for i in sorted(set(run["invocations"])):
        now = [r["latency_s"] for r, j in zip(run["rounds"], run["invocations"], strict=True) if j == i]
        base = [r["latency_s"] for r, j in zip(ref["rounds"], ref["invocations"], strict=True) if j == i]
        for t, (a, b) in enumerate(zip(now, base, strict=True)):
            first, second = (a, b) if i % 2 == 1 else (b, a)
            logs.setdefault(t, []).append(math.log(first / second))
            pairs.setdefault(t, []).append((first, second))
for t, v in sorted(logs.items()):
    f, s = (st.mean(p[k] for p in pairs[t]) for k in (0, 1))
    se = st.stdev(v) / len(v) ** 0.5
    print(f"trial {t}: first/second {math.exp(st.mean(v)):.4f} (SE {se:.4f}) n={len(v)} first {f:.4f}s second {s:.4f}s")
