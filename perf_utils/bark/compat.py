"""Every difference between transformers / optimum versions, absorbed in one place.

The suite must run on the stack being gated *and* on the one it is compared with (transformers 4.48 +
optimum 1.27 still has BetterTransformer, 5.x does not), so nothing outside this module looks at versions.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from perf_utils.bark.environment import Stack, version_lt

BETTERTRANSFORMER_MAX_OPTIMUM = "2.0"
BETTERTRANSFORMER_MAX_TRANSFORMERS = "4.49"
DTYPE_KWARG_SINCE = "4.56"


def dtype_kwarg(stack: Stack) -> str:
    """`from_pretrained` took `torch_dtype` until transformers 4.56 and `dtype` since."""
    return "torch_dtype" if version_lt(stack.version("transformers"), DTYPE_KWARG_SINCE) else "dtype"


def bettertransformer_missing(stack: Stack) -> str | None:
    optimum, tf = stack.version("optimum"), stack.version("transformers")
    if version_lt(optimum, BETTERTRANSFORMER_MAX_OPTIMUM) and version_lt(tf, BETTERTRANSFORMER_MAX_TRANSFORMERS):
        return None
    return (
        f"needs optimum<{BETTERTRANSFORMER_MAX_OPTIMUM} and transformers<{BETTERTRANSFORMER_MAX_TRANSFORMERS}; "
        f"found optimum {optimum or 'not installed'}, transformers {tf}"
    )


def to_bettertransformer(model: Any) -> Any:
    """transformers <4.49 has `model.to_bettertransformer()`; otherwise ask optimum directly."""
    if hasattr(model, "to_bettertransformer"):
        return model.to_bettertransformer()
    from optimum.bettertransformer import BetterTransformer  # absent in optimum>=2: caller checked

    return BetterTransformer.transform(model)


def enable_cpu_offload(model: Any, device: torch.device) -> None:
    """4.48 takes `gpu_id=` and rejects `accelerator_id`; 5.x takes `accelerator_id=` and swallows unknowns."""
    params = inspect.signature(model.enable_cpu_offload).parameters
    index = device.index or 0
    if "accelerator_id" in params:
        model.enable_cpu_offload(accelerator_id=index)
    else:
        model.enable_cpu_offload(gpu_id=index)


SUBMODELS = ("semantic", "coarse_acoustics", "fine_acoustics", "codec_model")


def compile_submodels(model: Any, **kwargs: Any) -> None:
    """`model.semantic = torch.compile(model.semantic)` does nothing: BarkModel.generate calls the
    sub-models' own `generate`, which bypasses the wrapper. `Module.compile()` compiles in place."""
    for name in SUBMODELS[:3]:
        getattr(model, name).compile(**kwargs)


def make_generation_config(bark_generation_config: Any) -> Any:
    """A Bark checkpoint needs a plain `GenerationConfig` whose sub-configs are dicts: that is what
    `from_pretrained` produces for real checkpoints, and `save_pretrained` refuses a BarkGenerationConfig."""
    from transformers import GenerationConfig

    return GenerationConfig(**bark_generation_config.to_dict())


def offload_defect() -> str | None:
    """Why accelerate's CPU offload leaves most of Bark's semantic model on the CPU here, or None.

    `BarkModel.enable_cpu_offload` gives `semantic.input_embeds_layer` a hook of its own (generate embeds before
    the semantic forward), then hooks the semantic model. Since accelerate 1.10, `CpuOffload.pre_forward` moves
    nothing when the module's *first* parameter is already on the execution device, and the semantic model's
    first parameter is that embedding, just moved by its own hook: the rest of the semantic model stays on the
    CPU (seen on an H200 under transformers 4.48: an index_select device error at `position_embeds_layer`).
    Probed on a two-embedding module with `meta` as the execution device, so no accelerator is needed."""
    try:
        import accelerate
        from accelerate import cpu_offload_with_hook
    except ImportError:
        return None

    class Probe(torch.nn.Module):  # Bark's shape: an embedding hooked on its own, first among the parameters
        def __init__(self) -> None:
            super().__init__()
            self.input_embeds_layer = torch.nn.Embedding(2, 2)
            self.position_embeds_layer = torch.nn.Embedding(2, 2)

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return self.position_embeds_layer(ids)

    meta = torch.device("meta")
    probe = Probe()
    probe.input_embeds_layer, _ = cpu_offload_with_hook(probe.input_embeds_layer, meta)
    cpu_offload_with_hook(probe, meta)
    ids = torch.zeros(1, dtype=torch.long)
    try:
        probe.input_embeds_layer(ids)
        probe(ids)
    except Exception:  # noqa: BLE001, S110 - a mismatch is the defect itself; the device below says which
        pass
    if probe.position_embeds_layer.weight.device == meta:
        return None
    return (
        f"accelerate {accelerate.__version__} (>=1.10) does not move a module whose first parameter is already on "
        "the device, and Bark hooks the semantic model's first parameter (input_embeds_layer) on its own: "
        "the rest of the semantic model stays on the CPU during generate (accelerate<1.10 moves it)"
    )
