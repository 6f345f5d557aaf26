"""Summarize forkexec.py's lines: cost, level and spread of forked against fresh invocations."""

import json
import math
import random
import statistics as st
import sys


def log_sd(xs: list[float]) -> float:
    return st.stdev([math.log(x) for x in xs])


def main(path: str) -> None:
    with open(path) as f:
        rows = [r for r in map(json.loads, f) if r["status"] == "ok"]
    for fork in (True, False):
        rs = [r for r in rows if r["fork"] == fork]
        later = rs[1:] if fork else rs  # the first fork also starts the zygote
        lat = [st.median(r["latency"]) for r in rs]
        per = [st.median(r["latency"]) / st.median(r["probe"]) for r in rs]
        peak = [st.median(r["host_peak"]) for r in rs]
        within = st.median([log_sd(r["latency"]) for r in rs])
        print(
            f"{'forked' if fork else 'fresh '} n={len(rs)} wall median {st.median([r['wall'] for r in later]):.1f}s "
            f"(first {rs[0]['wall']:.1f}) warmup {st.median([r['warmup'] for r in rs])} | latency median "
            f"{st.median(lat):.3f} SD(log) {log_sd(lat):.1%} | per probe median {st.median(per):.2f} SD "
            f"{log_sd(per):.1%} | probe {st.median([st.median(r['probe']) for r in rs]) * 1e3:.1f}ms | host peak "
            f"median {st.median(peak):.1f} range {min(peak):.1f}-{max(peak):.1f} | within-invocation SD {within:.1%}"
        )
    pairs: dict[int, dict[bool, dict]] = {}
    for r in rows:
        pairs.setdefault(r["pair"], {})[r["fork"]] = r
    both = [p for p in pairs.values() if len(p) == 2]
    ratios = [st.median(p[True]["latency"]) / st.median(p[False]["latency"]) for p in both]
    per_probe = [
        (st.median(p[True]["latency"]) / st.median(p[True]["probe"]))
        / (st.median(p[False]["latency"]) / st.median(p[False]["probe"]))
        for p in both
    ]
    print(
        f"fork/fresh within pairs: latency median {st.median(ratios):.3f} (range {min(ratios):.3f}-"
        f"{max(ratios):.3f}), per probe {st.median(per_probe):.3f}; n={len(ratios)}"
    )
    rng = random.Random(1)
    boot = sorted(st.median(rng.choices(ratios, k=len(ratios))) for _ in range(2000))
    print(f"  95% bootstrap of the median latency ratio: {boot[50]:.3f}-{boot[1950]:.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
