"""Candidate normalizers for the machine's level, timed after every Bark round in the suite's own invocation.

child mode: one invocation (fp32, fp16, bf16 at batch 1, one thread, 6 rounds, 32 tokens) in this fresh process,
with `run.host_probe` wrapped to also time each candidate, and `Measurer.call` wrapped to record CPU time beside
wall time; one JSON line appended. driver mode: spawn children until the deadline.
"""

import json
import math
import statistics
import subprocess
import sys
import time
from functools import cache

import torch


@cache
def _gpt():
    g = torch.Generator().manual_seed(1)

    class Block(torch.nn.Module):
        def __init__(self, d, h):
            super().__init__()
            self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
            self.fc, self.out = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)
            self.h = h

        def forward(self, x, cache):
            b, t, d = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
            q, k, v = (z.view(b, t, self.h, d // self.h).transpose(1, 2) for z in (q, k, v))
            if cache is not None:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // self.h), dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, t, d)
            x = x + self.proj(y)
            x = x + self.out(torch.nn.functional.gelu(self.fc(self.ln2(x))))
            return x, (k, v)

    class GPT(torch.nn.Module):
        def __init__(self, vocab=10048, d=32, layers=2, h=2):
            super().__init__()
            self.emb, self.pos = torch.nn.Embedding(vocab, d), torch.nn.Embedding(1024, d)
            self.blocks = torch.nn.ModuleList(Block(d, h) for _ in range(layers))
            self.ln, self.head = torch.nn.LayerNorm(d), torch.nn.Linear(d, vocab, bias=False)

        def forward(self, ids, pos, caches):
            x = self.emb(ids) + self.pos(pos)
            new = []
            for blk, c in zip(self.blocks, caches, strict=True):
                x, c2 = blk(x, c)
                new.append(c2)
            return self.head(self.ln(x[:, -1])), new

    torch.manual_seed(1)
    return GPT().eval(), g


@torch.no_grad()
def gpt_probe(steps=24):
    model, _ = _gpt()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, 10048, (1, 8), generator=g)
    start = time.perf_counter()
    caches = [None, None]
    pos = torch.arange(8)[None]
    x = ids
    for i in range(steps):
        logits, caches = model(x, pos, caches)
        probs = torch.softmax(logits / 0.7, dim=-1)
        x = torch.multinomial(probs, 1, generator=g)
        pos = torch.tensor([[8 + i]])
    return time.perf_counter() - start


def py_probe():
    start = time.perf_counter()
    total = 0
    for i in range(150_000):
        total += i & 7
    return time.perf_counter() - start


@cache
def _ops():
    g = torch.Generator().manual_seed(0)
    layers = torch.nn.Sequential(*(torch.nn.Linear(64, 64) for _ in range(8)))
    return layers, torch.randn(1, 64, generator=g), torch.randn(384, 384, generator=g), torch.randn(8 << 20)


@torch.no_grad()
def layers_probe():
    layers, x, _, _ = _ops()
    start = time.perf_counter()
    for _ in range(150):
        layers(x)
    return time.perf_counter() - start


def mm_probe():
    _, _, sq, _ = _ops()
    start = time.perf_counter()
    for _ in range(6):
        sq @ sq
    return time.perf_counter() - start


def mem_probe():
    *_, big = _ops()
    start = time.perf_counter()
    big.clone()
    return time.perf_counter() - start


def obj_probe():
    start = time.perf_counter()
    out = []
    for i in range(20_000):
        out.append({"a": i, "b": [i, i + 1], "c": str(i)})
    del out
    return time.perf_counter() - start


CANDIDATES = {
    "py": py_probe,
    "layers": layers_probe,
    "mm": mm_probe,
    "gpt": gpt_probe,
    "mem": mem_probe,
    "obj": obj_probe,
}


def child(index, out_path):
    from perf_utils.bark import checkpoints, configs
    from perf_utils.measure import measurer as mm
    from perf_utils.measure import run as runmod
    from perf_utils.measure.run import Case, Run, RunPlan

    samples = {k: [] for k in ("cur", *CANDIDATES)}
    original = runmod.host_probe

    def wrapped():
        value = original()
        samples["cur"].append(value)
        for k, f in CANDIDATES.items():
            samples[k].append(f())
        return value

    runmod.host_probe = wrapped
    cpu = {}
    inner = mm.Measurer.call

    def call(self):
        w0, c0 = time.perf_counter(), time.thread_time()
        out = inner(self)
        cpu.setdefault(id(self), []).append((time.thread_time() - c0) / (time.perf_counter() - w0))
        return out

    mm.Measurer.call = call
    for f in CANDIDATES.values():  # build operands before the run
        f()
    plan = RunPlan(
        checkpoints.resolve("tiny"),
        torch.device("cpu"),
        n_tokens=32,
        rounds=6,
        warmup=1,
        threads=1,
        invocations=1,
        seed=index,
    )
    cases = [Case(configs.get(c), 1) for c in ("fp32", "fp16", "bf16")]
    t0 = time.time()
    inv = Run(plan, check_fidelity=False).invocation(cases, index)
    rec = {"i": index, "start": t0, "wall": time.time() - t0}
    for r in inv.results:
        rec[r.config] = {"lat": statistics.median(x["latency_s"] for x in r.rounds), "warmup": r.warmup}
    rec["probes"] = {k: statistics.median(v) for k, v in samples.items()}
    rec["cpu_frac"] = statistics.median(v for vs in cpu.values() for v in vs)
    with open(out_path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def driver(minutes, out_path):
    end = time.time() + 60 * minutes
    i = 0
    while time.time() < end:
        subprocess.run([sys.executable, __file__, "child", str(i), out_path], check=False)
        i += 1


if __name__ == "__main__":
    if sys.argv[1] == "child":
        child(int(sys.argv[2]), sys.argv[3])
    else:
        driver(float(sys.argv[2]), sys.argv[3])
