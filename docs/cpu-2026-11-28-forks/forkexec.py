"""Alternate forked and fresh invocations of tiny fp32 at batch 1; one JSON line per invocation."""

import json
import random
import sys
import time

import torch

from perf_utils.bark import checkpoints, configs
from perf_utils.measure.run import Case, RunPlan
from perf_utils.measure.worker import Worker


def main(pairs: int, out_path: str) -> None:
    plan = RunPlan(checkpoints.resolve("tiny"), torch.device("cpu"), 32, 6, 1, threads=1, invocations=6)
    cases = [Case(configs.get("fp32"), 1)]
    rng = random.Random(7)
    with open(out_path, "a") as out:
        for p in range(pairs):
            kinds = [True, False]
            rng.shuffle(kinds)
            for fork in kinds:
                t = time.perf_counter()
                inv = Worker(sys.executable, plan, cases, p, False, None, serve=False, fork=fork).finish()
                wall = time.perf_counter() - t
                r = inv.results[0]
                row = {"pair": p, "fork": fork, "wall": wall, "t": time.time(), "status": r.status,
                       "warmup": r.warmup, "latency": r.values("latency_s"), "probe": r.values("host_probe_s"),
                       "host_peak": r.values("host_peak_mb")}  # fmt: skip
                out.write(json.dumps(row) + "\n")
                out.flush()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
