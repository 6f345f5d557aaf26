"""Is a process started first slower than one started after it, outside the suite?

Per invocation the parent starts worker process "first" and waits until it has warmed up, then "second" likewise;
then TRIALS trials, each timing both workers once in a random order (each worker times its own workload with
perf_counter). `python startorder.py torch|python`; INV invocations, REPS loops of the torch workload per trial.
"""

import math
import os
import random
import statistics as st
import subprocess
import sys
import time

KIND = sys.argv[1] if len(sys.argv) > 1 else "torch"


def torch_work(reps: int):
    """The torch workload: 12 matmuls 64x384x384 and tanh, `reps` times, at one thread (weights allocated here)."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ws = [torch.randn(384, 384) for _ in range(12)]
    x0 = torch.randn(64, 384)

    def work() -> None:
        for _ in range(reps):
            x = x0
            for w in ws:
                x = torch.tanh(x @ w)

    return work


def python_work():
    data = list(range(200_000))

    def work() -> None:
        for _ in range(6):
            d: dict[int, int] = {}
            for v in data:
                d[v & 1023] = d.get(v & 1023, 0) + v

    return work


def serve(work) -> None:
    """Warm up, say ready, then time one `work()` per line on stdin."""
    for _ in range(5):
        work()
    print("ready", flush=True)
    for _ in sys.stdin:
        t = time.perf_counter()
        work()
        print(f"{time.perf_counter() - t}", flush=True)


def child() -> None:
    serve(torch_work(int(os.environ.get("REPS", 40))) if KIND == "torch" else python_work())


def parent() -> None:
    invocations, trials = int(os.environ.get("INV", 20)), int(os.environ.get("TRIALS", 8))
    rng = random.Random(0)
    per_inv = []
    for i in range(invocations):
        procs = {}
        for name in ("first", "second"):
            cmd = [sys.executable, __file__, KIND, "child"]
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
            procs[name] = p
        times: dict[str, list[float]] = {"first": [], "second": []}
        for _ in range(trials):
            for name in rng.sample(["first", "second"], 2):
                procs[name].stdin.write("go\n")  # type: ignore[union-attr]
                procs[name].stdin.flush()  # type: ignore[union-attr]
                times[name].append(float(procs[name].stdout.readline()))  # type: ignore[union-attr]
        for p in procs.values():
            p.stdin.close()  # type: ignore[union-attr]
            p.wait()
        r = st.median(math.log(a / b) for a, b in zip(times["first"], times["second"], strict=True))
        per_inv.append(r)
        print(f"invocation {i + 1}: first/second {math.exp(r):.4f}  first {st.median(times['first']):.4f}s", flush=True)
    m, se = st.mean(per_inv), st.stdev(per_inv) / len(per_inv) ** 0.5
    print(f"{KIND}: {invocations} invocations x {trials} trials: first-started / second-started {math.exp(m):.4f} "
          f"(SE {se:.4f})")  # fmt: skip


if __name__ == "__main__":
    child() if sys.argv[2:3] == ["child"] else parent()
