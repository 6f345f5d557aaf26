"""Half precision's split latency outside the suite: fp32, fp16 and bf16 tiny loaded in one process, each at batch 1
and 8, called in a randomized interleaved order as the suite's rounds are (seed 1, 8 rounds). The batch-1 calls'
latencies are printed in round order, so the slow positions can be compared between variants:
`python exp5.py base|ftz|t1` (denormals flushed; one thread); `ONEDNN_PRIMITIVE_CACHE_CAPACITY=16384 python exp5.py
big` is the fix."""

import random
import statistics
import sys
import time

import torch
from transformers import set_seed

from perf_utils.bark import checkpoints, configs, loading
from perf_utils.bark.workload import Workload, make_inputs

variant = sys.argv[1]
if variant == "ftz":
    torch.set_flush_denormal(True)
if variant == "t1":
    torch.set_num_threads(1)
loading.quiet_transformers()
checkpoint, cpu = checkpoints.resolve("tiny"), torch.device("cpu")
models = {name: loading.load(checkpoint, configs.get(name), cpu) for name in ("fp32", "fp16", "bf16")}
cases = [(name, bs) for name in models for bs in (1, 8)]


def call(name: str, batch_size: int) -> float:
    loaded, workload = models[name], Workload(n_tokens=32, batch_size=batch_size)
    inputs = make_inputs(loaded.processor, workload, cpu)
    set_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        loaded.model.generate(**inputs, **workload.generate_kwargs())
    return time.perf_counter() - start


for case in cases:  # two warm-up calls each
    call(*case)
    call(*case)
rng, latencies = random.Random(1), {case: [] for case in cases}
for _ in range(8):
    order = cases[:]
    rng.shuffle(order)
    for case in order:
        latencies[case].append(call(*case))
for (name, bs), xs in latencies.items():
    if bs == 1:
        print(variant, name, f"median {statistics.median(xs):.3f}", [round(x, 2) for x in xs], flush=True)
