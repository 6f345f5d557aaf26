"""The host's speed now: a fixed piece of CPU work timed right after each round (`host_probe_s`, recorded, not
gated), so a reader and `gate.hostspeed` can tell "this machine is slower now" from "Bark is slower".

On this project's 2-core VM most latency noise is the machine's and lives between invocations and over minutes.
Measured 2026-11-27 (30 processes over 10 minutes, tiny fp32 at batch 1, 6 rounds each): the processes' median
latencies spread by 15% (CV, +91% from fastest to slowest), and the median of this probe in the same processes
correlated with them at 0.92; latency divided by the probe spread by 6.4%. A pure Python loop alone correlated at
0.88, small torch layers at 0.85, a 384-wide matmul at 0.47: the probe is all three, as tiny Bark on a CPU is
interpreter, small-kernel and some matmul work. About 17 ms here.
"""

from __future__ import annotations

import time
from functools import cache

import torch


@cache
def _operands() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    layers = torch.nn.Sequential(*(torch.nn.Linear(64, 64) for _ in range(8)))
    return layers, torch.randn(1, 64, generator=g), torch.randn(384, 384, generator=g)


@torch.no_grad()
def host_probe() -> float:
    """Seconds the fixed work took: a Python loop, small layers, a few matmuls."""
    layers, x, square = _operands()
    start = time.perf_counter()
    total = 0
    for i in range(150_000):
        total += i & 7
    for _ in range(150):
        layers(x)
    for _ in range(6):
        square @ square
    return time.perf_counter() - start
