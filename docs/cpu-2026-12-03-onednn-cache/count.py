"""How many kernels oneDNN compiles for one call: `ONEDNN_VERBOSE=profile_create python count.py fp16 1` prints a
line per kernel created (`cache_miss`: compiled, `cache_hit`: found); the first call compiles, the second finds
them all. Count the unique `cache_miss` lines before `CALL 1`."""

import sys

import torch
from transformers import set_seed

from perf_utils.bark import checkpoints, configs, loading
from perf_utils.bark.workload import Workload, make_inputs

loading.quiet_transformers()
name, batch_size, cpu = sys.argv[1], int(sys.argv[2]), torch.device("cpu")
loaded = loading.load(checkpoints.resolve("tiny"), configs.get(name), cpu)
workload = Workload(n_tokens=32, batch_size=batch_size)
inputs = make_inputs(loaded.processor, workload, cpu)
for i in range(2):
    print("CALL", i, flush=True)
    set_seed(0)
    with torch.no_grad():
        loaded.model.generate(**inputs, **workload.generate_kwargs())
