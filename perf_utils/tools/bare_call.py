"""One `generate` with none of the suite's instruments: `python -m perf_utils.tools.bare_call --config cpu_offload`.

When a configuration crashes inside the suite, this tells whether the suite (stage timers, trackers, fidelity,
interleaving) is the cause: it loads the configuration as a user would (`from_pretrained`, BetterTransformer,
offload; `bark.loading.load`) and calls `generate` once on the workload's inputs, even where the suite would call
the configuration unavailable. It prints where each sub-model's weights sat when it ran (a forward hook that
only reads) and, on failure, the error and where the weights sat then. Exit 0 when the call completed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from typing import Any

import torch

from perf_utils.bark import checkpoints, configs, loading
from perf_utils.bark.environment import current_stack
from perf_utils.bark.workload import Workload, make_inputs
from perf_utils.record.record import STACK_PACKAGES

# sub-model -> a module whose call shows where it ran (the fine model's generate calls its own `forward`, not
# the module, and the codec's forward is never called: Bark decodes with its quantizer and decoder)
WATCHED = {"semantic": "semantic.layers.0", "coarse_acoustics": "coarse_acoustics.layers.0",
           "fine_acoustics": "fine_acoustics.layers.0", "codec_model": "codec_model.decoder"}  # fmt: skip


def _watch(model: Any, seen: dict[str, str]) -> list[Any]:
    handles = []
    for name, path in WATCHED.items():

        def record(module: Any, args: Any, output: Any, name: str = name) -> None:
            if name not in seen:
                seen[name] = loading.where_weights_sit(model, (name,))

        handles.append(model.get_submodule(path).register_forward_hook(record))
    return handles


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m perf_utils.tools.bare_call", description=__doc__)
    parser.add_argument("--checkpoint", default="tiny", help="a checkpoint spec, as --bark-checkpoint")
    parser.add_argument("--config", default="cpu_offload", help="a configuration name, as --bark-configs")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    stack = current_stack()
    device = torch.device(args.device)
    config = configs.get(args.config)
    versions = ", ".join(f"{p} {stack.version(p)}" for p in STACK_PACKAGES)
    print(f"{args.config} on {device} ({stack.accelerator_name or stack.cpu}); {versions}", flush=True)
    print(f"the suite would say: {configs.unavailable_reason(config, stack, device.type) or 'available'}")
    loading.quiet_transformers()
    checkpoint = checkpoints.resolve(args.checkpoint)
    loaded = loading.load(checkpoint, config, device)
    workload = Workload(n_tokens=args.tokens, batch_size=args.batch_size)
    inputs = make_inputs(loaded.processor, workload, device)
    seen: dict[str, str] = {}
    handles = _watch(loaded.model, seen)
    start = time.perf_counter()
    try:
        with torch.no_grad():
            audio = loaded.model.generate(**inputs, **workload.generate_kwargs())
    except Exception as exc:  # noqa: BLE001 - the point is to show it
        print(f"generate FAILED after {time.perf_counter() - start:.1f}s: {type(exc).__name__}: {exc}")
        print("".join(traceback.format_exception(exc))[-3000:])
        print(f"weights when it failed: {loading.where_weights_sit(loaded.model)}")
        ok = False
    else:
        print(f"generate completed in {time.perf_counter() - start:.1f}s: audio {tuple(audio.shape)}")
        ok = True
    for handle in handles:
        handle.remove()
    for name in WATCHED:
        print(f"  ran with weights on: {seen.get(name, f'{name}: did not run')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
