"""Replays the History section's trend calls over the kept runs of the default CPU tier, as measured and per host
probe: every run is unchanged code, so every trend called is a false alarm.

    python docs/cpu-2026-12-03-history-per-probe/replay.py RUN.json[.gz] ...

Each prefix of 4 or more runs (oldest first) is one night's report: its latest run judged against the runs before
it by `gate.trends.of_history`, as `report.markdown.write` calls it, with pyproject's CPU thresholds; time read as
measured (the History before 2026-12-03) and per host probe (since).
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

from perf_utils.gate import trends
from perf_utils.gate.compare import IMPROVED, REGRESSED
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record import store
from perf_utils.record.record import RunRecord
from perf_utils.record.store import KeptRun

MEMORY = "host_peak_mb"


def load(path: Path) -> RunRecord:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return store.validate(json.load(f), path)


def main(paths: list[str]) -> None:
    records = sorted((load(Path(p)) for p in paths), key=lambda r: r.created)
    th = Thresholds.from_pyproject(Path("pyproject.toml"), "cpu")
    print(f"{len(records)} runs, {records[0].created[:16]} to {records[-1].created[:16]}")
    runs = [KeptRun(Path(r.created), r) for r in records]
    for name, per_probe in (("as measured", False), ("per host probe", True)):
        nights, calls = 0, []
        for n in range(trends.MIN_RUNS, len(runs) + 1):
            nights += 1
            found = trends.of_history(runs[:n], runs[n - 1].record, th, MEMORY, per_probe)
            calls += [(runs[n - 1].record.created[:16], t.benchmark, t.metric, t.verdict, t.why)
                      for t in found.trends if t.verdict in (REGRESSED, IMPROVED)]  # fmt: skip
        latency = [c for c in calls if c[2] == "latency_s"]
        memory = [c for c in calls if c[2] == MEMORY]
        reports = len({c[0] for c in calls})
        print(f"\n{name}: {nights} reports, {reports} with a trend called; {len(latency)} latency calls, "
              f"{len(memory)} memory calls:")  # fmt: skip
        for c in latency + memory:
            print("  ", *c)


if __name__ == "__main__":
    main(sys.argv[1:])
