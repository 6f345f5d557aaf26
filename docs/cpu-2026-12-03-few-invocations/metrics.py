"""Per-metric verdicts of every judged pair in gate-quality --json files, at pyproject's thresholds (as the gate)."""

import sys
from collections import Counter
from pathlib import Path

from perf_utils.gate import hostspeed
from perf_utils.gate.compare import compare_result
from perf_utils.gate.thresholds import Thresholds
from perf_utils.tools.quality import QualityRuns

for f in sys.argv[1:]:
    q = QualityRuns.load(Path(f))
    th = Thresholds.from_pyproject(Path("pyproject.toml"), q.device_type)
    for sc in q.scenarios:
        paired = bool(sc.references)
        per_probe = th.time_per_host_probe and not paired
        c = Counter()
        for ref, run in sc.judged_pairs():
            if per_probe:
                ref, run = hostspeed.adjusted(ref) or ref, hostspeed.adjusted(run) or run
            v = compare_result(ref, run, th, paired, per_probe, sc.unlike)
            for m in v.metrics:
                if m.info.gated and m.verdict not in ("unchanged",):
                    c[f"{m.metric}:{m.verdict}"] += 1
            c[f"ROW:{v.verdict}"] += 1
        print(f"{Path(f).name} | {sc.label} ({len(sc.runs)}): " + ", ".join(f"{k} {n}" for k, n in sorted(c.items())))
