"""Faults injected on purpose, to prove the gates catch what they claim to (tests and `gate-quality`).

Each fault is a `patch` for an `OptimizationConfig`: `inject(config, fault)` returns a test-only copy of the
configuration under the same name, so a faulty run compares against the healthy baseline benchmark by benchmark.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from perf_utils.bark.configs import OptimizationConfig
from perf_utils.measure.trackers.stages import STAGE_METHODS
from perf_utils.record.metrics import MB


def double_attention(model: Any) -> None:
    """Every attention layer does its work twice (the result of the second is used): pure extra compute."""
    for module in model.modules():
        inner = getattr(module, "_attn", None)
        if inner is not None and type(module).__name__.startswith("BarkSelf"):

            def twice(*args: Any, _inner: Callable[..., Any] = inner, **kwargs: Any) -> Any:
                _inner(*args, **kwargs)
                return _inner(*args, **kwargs)

            module._attn = twice


def extra_buffer(megabytes: int = 64) -> Callable[[Any], None]:
    """Hold an extra buffer of known size on the model's device for the whole `generate` call."""

    def patch(model: Any) -> None:
        inner = model.generate

        def generate(*args: Any, **kwargs: Any) -> Any:
            buffer = torch.ones(megabytes * MB // 4, device=model.device)
            try:
                return inner(*args, **kwargs)
            finally:
                del buffer

        model.generate = generate

    return patch


def slowdown(fraction: float, stage: str | None = None) -> Callable[[Any], None]:
    """Make each `generate` take `fraction` longer than it did (sleeps in proportion to the real call), or only one
    of its stages (`record.metrics.STAGES`): where the gate should say the time went."""

    def patch(model: Any) -> None:
        owner, method = model, "generate"
        if stage is not None:
            path, method = STAGE_METHODS[stage]
            owner = model.get_submodule(path) if path else model
        inner = getattr(owner, method)

        def slower(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            time.sleep((time.perf_counter() - start) * fraction)
            return out

        setattr(owner, method, slower)

    return patch


def drop_causal_mask(model: Any) -> None:
    """The semantic and coarse models' attention sees later tokens (a fused-attention port that loses
    `is_causal`): same speed, different audio; only the fidelity gate can see it. (A dropped *padding* mask is no
    fault for Bark: its generate never masks a position, so the audio stays the same.)"""
    with torch.no_grad():
        for sub in (model.semantic, model.coarse_acoustics):
            for module in sub.modules():
                causal = getattr(module, "bias", None)
                if getattr(module, "is_causal", False) and isinstance(causal, torch.Tensor):
                    causal.fill_(True)


def perturb_weights(scale: float = 0.05) -> Callable[[Any], None]:
    """One layer of the fine model drifts slightly (as a bad conversion or a kernel bug would): same speed."""

    @torch.no_grad()
    def patch(model: Any) -> None:
        weight = model.fine_acoustics.layers[0].mlp.in_proj.weight
        g = torch.Generator().manual_seed(7)
        weight += scale * weight.abs().mean() * torch.randn(weight.shape, generator=g).to(weight)

    return patch


def crash(model: Any) -> None:
    """`generate` raises: a run that fails must never update a baseline."""

    def generate(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected crash")

    model.generate = generate


def misplaced_weights(model: Any) -> None:
    """One layer's weights on another device (`meta`), as accelerate>=1.10 leaves Bark's semantic model under CPU
    offload: the call fails with a device error, which must say where each sub-model's weights sat."""
    model.semantic.position_embeds_layer.to("meta")


FAULTS: dict[str, Callable[[Any], None]] = {
    "crash": crash,
    "misplaced_weights": misplaced_weights,
    "drop_causal_mask": drop_causal_mask,
    "perturb_weights": perturb_weights(),
    "double_attention": double_attention,
    "extra_buffer": extra_buffer(64),
}


def parse(spec: str) -> Callable[[Any], None]:
    """`double_attention`, `extra_buffer`, `extra_buffer:128` (MB), `slowdown:0.2` or `slowdown:0.2:coarse` (one
    stage)."""
    name, _, arg = spec.partition(":")
    if name == "slowdown" and arg:
        fraction, _, stage = arg.partition(":")
        if stage and stage not in STAGE_METHODS:
            raise ValueError(f"fault {spec!r}: no stage {stage!r}; stages: {', '.join(STAGE_METHODS)}")
        return slowdown(float(fraction), stage or None)
    if name == "extra_buffer" and arg:
        return extra_buffer(int(arg))
    if name in FAULTS and not arg:
        return FAULTS[name]
    known = ", ".join([*FAULTS, "extra_buffer:MB", "slowdown:FRACTION", "slowdown:FRACTION:STAGE"])
    raise ValueError(f"unknown fault {spec!r}; known: {known}")


def inject(config: OptimizationConfig, spec: str) -> OptimizationConfig:
    return replace(config, patch=parse(spec), test_only=True, fault=spec)
