"""The main job's latency intervals before and after the suite sized oneDNN's kernel cache: each run judged against
the baseline taken the same way, by the gate itself (pyproject's CPU thresholds, per host probe as the CPU is)."""

from pathlib import Path

from perf_utils.gate.decide import GateOptions, judge
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record import store

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
PAIRS = (
    ("before", "before-baseline-1733.json", "before-run-1740.json"),
    ("after", "after-baseline-1804.json", "after-run-1811.json"),
)
for label, base, run in PAIRS:
    b, r = store.load(HERE / base), store.load(HERE / run)
    opts = GateOptions(HERE, Thresholds.from_pyproject(ROOT / "pyproject.toml", "cpu"), HERE / base)
    comparison = judge(b, r, opts, HERE / base).comparison
    for v in comparison.verdicts:
        if (m := v.metric("latency_s")) is not None:
            interval = f"({m.low:+6.1%}..{m.high:+6.1%}) width {m.high - m.low:5.1%}"
            print(f"{label:6s} {v.id:18s} {m.change:+6.1%} {interval} {v.verdict}")
