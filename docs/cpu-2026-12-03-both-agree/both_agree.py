"""Latency verdicts of gate-quality runs judged per host probe, as measured, and only when both agree."""

import sys
from pathlib import Path

from perf_utils.gate import hostspeed
from perf_utils.gate.compare import compare_result
from perf_utils.gate.thresholds import Thresholds
from perf_utils.tools.quality import QualityRuns

th0 = Thresholds.from_pyproject(Path("pyproject.toml"), "cpu")
for f in sys.argv[2:]:
    q = QualityRuns.load(Path(f))
    for t in [float(x) for x in sys.argv[1].split(",")]:
        th = th0.with_time(t)
        out = []
        for sc in q.scenarios:
            c = {"probe": [0, 0], "raw": [0, 0], "both": [0, 0]}
            for r in sc.runs:
                p = (
                    compare_result(hostspeed.adjusted(sc.reference), hostspeed.adjusted(r), th, False, True)
                    .metric("latency_s")
                    .verdict
                )
                m = compare_result(sc.reference, r, th, False, False).metric("latency_s").verdict
                b = p if p == m else "noisy"  # a call only where both call it; else the gate cannot tell
                for k, v in (("probe", p), ("raw", m), ("both", b)):
                    c[k][0] += v in ("regressed", "improved") if sc.metric == "any" else v == "regressed"
                    c[k][1] += v == "noisy"
            n = len(sc.runs)
            out.append(
                f"{sc.label.split(' (')[0]} n={n}: "
                + ", ".join(f"{k} {a}/{n} called {nn} noisy" for k, (a, nn) in c.items())
            )
        print(f"{Path(f).parent.name}/{Path(f).name} at {t:.0%}:\n  " + "\n  ".join(out))
