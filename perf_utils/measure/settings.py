"""oneDNN's kernel cache, sized for interleaved cases: a process-wide setting every measuring process applies
before its first call (`RunPlan.apply`), recorded with the run.

oneDNN (torch's CPU kernels for convolutions, and for half precision where the CPU has them natively) compiles a
kernel per operation and shape and keeps at most 1024 per process (`ONEDNN_PRIMITIVE_CACHE_CAPACITY`). One tiny
call at fp16 or bf16 needs about 285 (counted with `ONEDNN_VERBOSE=profile_create`, 2026-12-03), fp32 45-71: a
process running one configuration keeps all of them, but an invocation interleaving eight cases does not. On a
2-core Intel Xeon with AMX the cases then evicted each other's kernels, and a call whose kernels were evicted
compiled them again: fp16 and bf16 at batch 1 took 0.33 s or 0.55 s depending on the case before it, with 25-40 MB
more host peak (a baseline's rounds, 10 x 2). With room for 16384 the same calls took 0.32-0.35 s every time, and
the process's RSS did not grow (1158 MB against 1198 MB). oneDNN reads the variable when it first compiles a kernel,
so it is set before the first call: in every worker process; in the calling process (`--bark-invocations 1`) only
if nothing there ran oneDNN before. A value the user set is kept.
"""

from __future__ import annotations

import os

ONEDNN_CACHE_VAR = "ONEDNN_PRIMITIVE_CACHE_CAPACITY"  # read by oneDNN itself
ONEDNN_CACHE = 16384  # room for ~57 half-precision cases of ~285 kernels: every case of the largest CPU matrix


def size_onednn_cache() -> int | None:
    """Set the cache's capacity for this process (unless already set) and return the capacity it will have."""
    os.environ.setdefault(ONEDNN_CACHE_VAR, str(ONEDNN_CACHE))
    return onednn_cache()


def onednn_cache() -> int | None:
    """The capacity this process's environment gives oneDNN; None where the variable does not hold a number."""
    try:
        return int(os.environ[ONEDNN_CACHE_VAR])
    except (KeyError, ValueError):
        return None
