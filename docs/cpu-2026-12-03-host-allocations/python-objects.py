"""memray counting pymalloc's 1 MiB arenas (False) or Python's objects one by one (True), after three warm calls of
fp32, fp16 and bf16 tiny at batch 1 on one thread: {(config, objects traced): (MB counted, seconds)}. Run it in
several processes: the arena count can move by exactly 1 MiB between processes (seen in the one-thread lane's
baseline, 4 of 10 invocations for bs1-fp32), the object count within a few KB."""

import os
import tempfile
import time

import memray
import torch
from transformers import set_seed

from perf_utils.bark import checkpoints, configs, loading
from perf_utils.bark.workload import Workload, make_inputs
from perf_utils.measure.trackers import memory

torch.set_num_threads(1)
memory.pin_host_allocator()
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")
loading.quiet_transformers()
cpu = torch.device("cpu")
names = ("fp32", "fp16", "bf16")
models = {name: loading.load(checkpoints.resolve("tiny"), configs.get(name), cpu) for name in names}
workload = Workload(n_tokens=32, batch_size=1)
folder = tempfile.mkdtemp()
for loaded in models.values():
    inputs = make_inputs(loaded.processor, workload, cpu)
    for _ in range(3):
        set_seed(0)
        loaded.model.generate(**inputs, **workload.generate_kwargs())
counted = {}
for name, loaded in models.items():
    inputs = make_inputs(loaded.processor, workload, cpu)
    for objects in (False, True):
        set_seed(0)
        path = os.path.join(folder, f"{name}{objects}.bin")
        t0 = time.perf_counter()
        destination = memray.FileDestination(path, overwrite=True)
        fmt = memray.FileFormat.AGGREGATED_ALLOCATIONS
        with memray.Tracker(destination=destination, file_format=fmt, trace_python_allocators=objects):
            loaded.model.generate(**inputs, **workload.generate_kwargs())
        seconds = time.perf_counter() - t0
        counted[(name, objects)] = (round(memray.FileReader(path).metadata.peak_memory / 2**20, 3), round(seconds, 2))
print(counted, flush=True)
