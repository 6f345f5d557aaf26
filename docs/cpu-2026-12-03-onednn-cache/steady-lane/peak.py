"""Where the spread of a batch-1 call's host peak comes from: fp32 and fp16 tiny in one process, ten calls each,
each measured by the suite's own tracker (VmHWM over the level before the call). `python peak.py VARIANT THREADS`:
`pin+trim` is the suite (glibc's mmap threshold pinned at 1 MiB, `malloc_trim` before each call), `pin+notrim`
skips the trim, `none+notrim` is glibc as it comes. The last eight calls' peaks are printed (MB)."""

import sys

import torch
from transformers import set_seed

from perf_utils.bark import checkpoints, configs, loading
from perf_utils.bark.workload import Workload, make_inputs
from perf_utils.measure.trackers import memory

variant, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
if "pin" in variant:
    memory.pin_host_allocator()
if "notrim" in variant:
    memory.release_freed_heap = lambda: None  # what HostMemoryTracker.start calls first
loading.quiet_transformers()
cpu = torch.device("cpu")
models = {name: loading.load(checkpoints.resolve("tiny"), configs.get(name), cpu) for name in ("fp32", "fp16")}
workload = Workload(n_tokens=32, batch_size=1)
peaks: dict[str, list[float]] = {name: [] for name in models}
for _ in range(10):
    for name, loaded in models.items():
        inputs = make_inputs(loaded.processor, workload, cpu)
        set_seed(0)
        tracker = memory.HostMemoryTracker()
        tracker.start()
        with torch.no_grad():
            loaded.model.generate(**inputs, **workload.generate_kwargs())
        tracker.stop()
        peaks[name].append(round(tracker.results()["host_peak_mb"], 1))
for name, values in peaks.items():
    print(variant, threads, name, values[2:], flush=True)
