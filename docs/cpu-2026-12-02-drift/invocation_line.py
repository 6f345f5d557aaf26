"""What the two invocation experiments (forked_vs_fresh.py, arms.py) write per invocation: one JSON line."""

import json
import statistics
from typing import Any


def write(out: Any, head: dict[str, Any], invocation: Any) -> None:
    """`head` (pair or triplet, arm, wall time), then per configuration the medians of latency, latency / host
    probe, the probe and the host peak, and its warm-up count."""
    rec = dict(head)
    for r in invocation.results:
        lat = [x["latency_s"] for x in r.rounds]
        pr = [x["host_probe_s"] for x in r.rounds]
        rec[r.config] = {
            "lat": statistics.median(lat),
            "per": statistics.median(a / b for a, b in zip(lat, pr, strict=True)),
            "probe": statistics.median(pr),
            "peak": statistics.median(x["host_peak_mb"] for x in r.rounds),
            "warmup": r.warmup,
        }
    out.write(json.dumps(rec) + "\n")
    out.flush()
