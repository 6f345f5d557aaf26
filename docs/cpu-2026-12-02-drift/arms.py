"""Fresh vs forked vs forked from a gc-frozen zygote, rotating order, the lane's invocation (fp32, fp16, bf16 at
batch 1, one thread, 6 rounds): one JSON line per invocation.
/tmp/wt10 and /tmp/wtfz held the perf_utils of cf53a09; /tmp/wtfz added `gc.collect(); gc.freeze()` after the PRELOAD
imports in `perf_utils.measure.forks.main` (not kept). Each zygote imports its own worktree's perf_utils."""

import os
import sys
import time

import invocation_line
import torch

from perf_utils.bark import checkpoints, configs
from perf_utils.measure import forks
from perf_utils.measure.run import Case, RunPlan
from perf_utils.measure.worker import Worker

n = int(sys.argv[1])
out = open(sys.argv[2], "a")  # noqa: SIM115 - appended line by line to the end
plan = RunPlan(
    checkpoints.resolve("tiny"), torch.device("cpu"), n_tokens=32, rounds=6, warmup=1, threads=1, invocations=2
)
cases = [Case(configs.get(c), 1) for c in ("fp32", "fp16", "bf16")]
zygotes = {}
for arm, where in (("fork", "/tmp/wt10"), ("frozen", "/tmp/wtfz")):
    os.chdir(where)
    zygotes[arm] = forks._Zygote()
os.chdir("/tmp/wt10")
time.sleep(20)  # both zygotes done importing
arms = ["fresh", "fork", "frozen"]
for i in range(n):
    order = arms[i % 3 :] + arms[: i % 3]
    for arm in order:
        if arm != "fresh":
            forks._Zygote._current = zygotes[arm]
        t0 = time.time()
        inv = Worker(sys.executable, plan, cases, i, False, None, serve=False, fork=arm != "fresh").finish()
        invocation_line.write(out, {"i": i, "arm": arm, "wall": time.time() - t0, "start": t0}, inv)
for z in zygotes.values():
    z.sock.close()
