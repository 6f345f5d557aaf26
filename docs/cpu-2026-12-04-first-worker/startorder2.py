"""Which order matters: starting (import torch) or allocating + warming up? Two factors, crossed at random.

Per invocation both worker processes import torch (which first alternates by invocation), then each allocates its
weights and warms up in turn (in a random order), then 8 trials time both in a random order. `INV` invocations.
"""

import math
import os
import random
import statistics as st
import subprocess
import sys

from startorder import serve, torch_work  # this folder


def child() -> None:
    import torch

    torch.set_num_threads(1)
    print("imported", flush=True)
    sys.stdin.readline()
    serve(torch_work(200))  # allocates, warms up and serves as startorder.py's child does


def send(p: subprocess.Popen, line: str) -> str:
    p.stdin.write(line + "\n")
    p.stdin.flush()
    return p.stdout.readline().strip()


def parent() -> None:
    invocations, trials = int(os.environ.get("INV", 40)), 8
    rng = random.Random(1)
    rows = []
    for i in range(invocations):
        start = ["a", "b"] if i % 2 == 0 else ["b", "a"]
        alloc = rng.sample(["a", "b"], 2)
        procs = {}
        for name in start:
            cmd = [sys.executable, __file__, "child"]
            p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert p.stdout is not None and p.stdout.readline().strip() == "imported"
            procs[name] = p
        for name in alloc:
            assert send(procs[name], "alloc") == "ready"
        times: dict[str, list[float]] = {"a": [], "b": []}
        for _ in range(trials):
            for name in rng.sample(["a", "b"], 2):
                times[name].append(float(send(procs[name], "go")))
        for p in procs.values():
            p.stdin.close()  # type: ignore[union-attr]
            p.wait()
        # log(started-first / started-second), and whether the started-first also allocated first
        s1, s2 = start
        r = st.median(math.log(x / y) for x, y in zip(times[s1], times[s2], strict=True))
        same = alloc[0] == s1
        rows.append((r, same))
        print(f"invocation {i + 1}: started-first/second {math.exp(r):.4f}, allocated first too: {same}", flush=True)
    for label, sel in (("started first AND allocated first", True), ("started first, allocated second", False)):
        v = [r for r, s in rows if s == sel]
        if len(v) > 1:
            se = st.stdev(v) / len(v) ** 0.5
            print(f"{label}: n={len(v)} started-first/started-second {math.exp(st.mean(v)):.4f} (SE {se:.4f})")


if __name__ == "__main__":
    child() if sys.argv[1:2] == ["child"] else parent()
