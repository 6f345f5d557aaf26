"""Load a checkpoint with one configuration applied, and free it completely afterwards."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from perf_utils.bark import compat
from perf_utils.bark import device as dev
from perf_utils.bark.checkpoints import Checkpoint
from perf_utils.bark.configs import OptimizationConfig
from perf_utils.bark.environment import current_stack


@dataclass
class LoadedBark:
    model: Any
    processor: Any
    checkpoint: Checkpoint
    config: OptimizationConfig
    device: torch.device
    load_s: float
    # What the loaded model holds on the accelerator (allocator bytes); None on the CPU. A peak measured while
    # other models are resident (interleaved rounds) leaves theirs out.
    resident_bytes: int | None = None


def quiet_transformers() -> None:
    """Bark logs the same attention-mask warning on every call; it would drown the suite's own output."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def load_processor(checkpoint: Checkpoint) -> Any:
    from transformers import BarkProcessor

    has_speakers = (checkpoint.path / "speaker_embeddings_path.json").exists()
    return BarkProcessor.from_pretrained(
        str(checkpoint.path), **({} if has_speakers else {"speaker_embeddings_dict_path": None})
    )


def load(checkpoint: Checkpoint, config: OptimizationConfig, device: torch.device) -> LoadedBark:
    """from_pretrained -> BetterTransformer -> offload or move -> compile -> test patch, the blog's order."""
    from transformers import BarkModel

    start = time.perf_counter()
    before = dev.memory_allocated(device)
    kwargs = {
        compat.dtype_kwarg(current_stack()): config.torch_dtype,
        "attn_implementation": config.attn_implementation,
    }
    model = BarkModel.from_pretrained(str(checkpoint.path), **kwargs)
    if config.bettertransformer:
        model = compat.to_bettertransformer(model)
    if config.cpu_offload:
        compat.enable_cpu_offload(model, device)
    else:
        model = model.to(device)
    if config.compile:
        compat.compile_submodels(model)
    if config.patch is not None:
        config.patch(model)
    model.eval()
    processor = load_processor(checkpoint)
    dev.synchronize(device)
    after = dev.memory_allocated(device)
    resident = after - before if after is not None and before is not None else None
    return LoadedBark(model, processor, checkpoint, config, device, time.perf_counter() - start, resident)


def where_weights_sit(model: Any, names: tuple[str, ...] = compat.SUBMODELS) -> str:
    """Which device holds each of the `names` sub-models' weights, by direct child where they are split (an
    offload crash is read from this): `semantic: cuda:0 (input_embeds_layer), cpu (position_embeds_layer, ...)`."""
    parts = []
    for name in names:
        sub = getattr(model, name, None)
        if sub is None:
            continue
        by_device: dict[str, list[str]] = {}
        for child, module in sub.named_children():
            devices = {str(p.device) for p in module.parameters()}
            for d in sorted(devices):
                by_device.setdefault(d, []).append(child)
        if len(by_device) <= 1:
            parts.append(f"{name}: {next(iter(by_device), 'no weights')}")
        else:
            parts.append(f"{name}: " + ", ".join(f"{d} ({', '.join(c)})" for d, c in sorted(by_device.items())))
    return "; ".join(parts)


def unload(loaded: LoadedBark) -> None:
    """Drop every reference we hold, collect, empty the accelerator cache and reset its peaks."""
    device = loaded.device
    loaded.model = None
    loaded.processor = None
    if hasattr(torch, "_dynamo"):
        torch._dynamo.reset()  # compiled graphs hold their model's tensors
    dev.release_memory(device)
