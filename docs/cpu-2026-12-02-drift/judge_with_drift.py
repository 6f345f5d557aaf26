"""Latency verdicts per host probe of a gate-quality --json file at several thresholds and drift settings."""

import sys
from dataclasses import replace
from pathlib import Path

from perf_utils.gate import hostspeed
from perf_utils.gate.compare import compare_result
from perf_utils.gate.thresholds import Thresholds
from perf_utils.tools.quality import QualityRuns

q = QualityRuns.load(Path(sys.argv[1]))
th0 = Thresholds.from_pyproject(Path("pyproject.toml"), "cpu")
for d in [float(x) for x in sys.argv[2].split(",")]:
    for t in [float(x) for x in sys.argv[3].split(",")]:
        th = replace(th0.with_time(t), drift=d)
        cells = []
        for sc in q.scenarios:
            c = {}
            for r in sc.runs:
                m = compare_result(hostspeed.adjusted(sc.reference), hostspeed.adjusted(r), th, False, True).metric(
                    "latency_s"
                )
                c[m.verdict] = c.get(m.verdict, 0) + 1
            cells.append(f"{sc.label.split(' (')[0]}: " + " ".join(f"{k} {v}" for k, v in sorted(c.items())))
        print(f"drift {d:.0%} time {t:.0%}: " + " | ".join(cells))
