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


def embeds_kwarg(submodel: Any) -> str:
    """Bark's causal forward takes `input_embeds` in 4.x and `inputs_embeds` in 5.x."""
    params = inspect.signature(type(submodel).forward).parameters  # the class's: a patched forward hides it
    return "inputs_embeds" if "inputs_embeds" in params else "input_embeds"
