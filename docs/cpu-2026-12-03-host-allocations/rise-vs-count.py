"""The RSS rise against memray's count, on the same calls: fp32 and fp16 tiny loaded in one process, six calls each,
interleaved; each call measured once by the suite's RSS tracker (timed) and once under memray (timed too, to show
memray's cost). `python rise-vs-count.py THREADS BATCH`; run it in two processes to see both spreads. The suite
itself traces Python's objects as well (`python-objects.py`); this first look counted pymalloc's arenas."""

import os
import sys
import tempfile
import time

import memray
import torch
from transformers import set_seed

from perf_utils.bark import checkpoints, configs, loading
from perf_utils.bark.workload import Workload, make_inputs
from perf_utils.measure.trackers import memory

threads, bs = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
memory.pin_host_allocator()
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16384")
loading.quiet_transformers()
cpu = torch.device("cpu")
models = {name: loading.load(checkpoints.resolve("tiny"), configs.get(name), cpu) for name in ("fp32", "fp16")}
workload = Workload(n_tokens=32, batch_size=bs)
out = {n: {"rise": [], "count": [], "t": [], "t_memray": []} for n in models}
folder = tempfile.mkdtemp()
for i in range(6):
    for name, loaded in models.items():
        inputs = make_inputs(loaded.processor, workload, cpu)
        set_seed(0)
        tracker = memory.HostMemoryTracker()
        tracker.start()
        t0 = time.perf_counter()
        with torch.no_grad():
            loaded.model.generate(**inputs, **workload.generate_kwargs())
        t1 = time.perf_counter()
        tracker.stop()
        out[name]["rise"].append(round(tracker.results()["host_peak_mb"], 1))
        out[name]["t"].append(round(t1 - t0, 3))
        set_seed(0)
        path = os.path.join(folder, f"{name}{i}.bin")
        t0 = time.perf_counter()
        destination = memray.FileDestination(path, overwrite=True)
        fmt = memray.FileFormat.AGGREGATED_ALLOCATIONS
        with memray.Tracker(destination=destination, file_format=fmt), torch.no_grad():
            loaded.model.generate(**inputs, **workload.generate_kwargs())
        t1 = time.perf_counter()
        out[name]["count"].append(round(memray.FileReader(path).metadata.peak_memory / 2**20, 2))
        out[name]["t_memray"].append(round(t1 - t0, 3))
        os.remove(path)
for name, values in out.items():
    print(threads, bs, name, values, flush=True)
