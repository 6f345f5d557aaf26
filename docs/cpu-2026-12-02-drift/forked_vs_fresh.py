"""Forked vs fresh invocations, alternating (ABBA), one thread, 6 rounds; the judged config beside fp16 and bf16
as in the lane: invocation medians of latency and latency / probe, per mode, one JSON line each."""

import sys
import time

import invocation_line
import torch

from perf_utils.bark import checkpoints, configs
from perf_utils.measure.run import Case, RunPlan
from perf_utils.measure.worker import Worker

n = int(sys.argv[1])
out = open(sys.argv[2], "a")  # noqa: SIM115 - appended line by line to the end
plan = RunPlan(
    checkpoints.resolve("tiny"), torch.device("cpu"), n_tokens=32, rounds=6, warmup=1, threads=1, invocations=2
)
cases = [Case(configs.get(c), 1) for c in ("fp32", "fp16", "bf16")]
for i in range(n):
    for fork in (True, False) if i % 2 == 0 else (False, True):
        t0 = time.time()
        inv = Worker(sys.executable, plan, cases, i, False, None, serve=False, fork=fork).finish()
        invocation_line.write(out, {"i": i, "fork": fork, "wall": time.time() - t0, "start": t0}, inv)
