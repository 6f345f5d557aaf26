"""The optimization configurations, as data.

Each configuration declares what it changes (dtype, attention kernel, BetterTransformer, CPU offload,
compile); what it *needs* follows from those fields, so adding a configuration is one entry in `_BUILTIN`
and its availability check, loading and fidelity tolerance come for free.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from perf_utils.bark import compat
from perf_utils.bark.environment import Stack, version_lt

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class OptimizationConfig:
    name: str
    summary: str
    dtype: str = "float32"
    attn_implementation: str = "eager"
    bettertransformer: bool = False
    cpu_offload: bool = False
    compile: bool = False
    # Applied to the loaded model; for test-only fault injection (a configuration that must fail the gate).
    patch: Callable[[Any], None] | None = None
    test_only: bool = False
    # The fault spec `patch` came from (measure.faults), so a worker process can rebuild the same configuration.
    fault: str | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"configuration {self.name!r}: dtype {self.dtype!r} is not one of {sorted(DTYPES)}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def precision(self) -> str:
        """'exact' changes must agree with fp32 eager to float32 rounding; 'half' ones to what half allows."""
        return "exact" if self.dtype == "float32" else self.dtype

    def changes(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "attn_implementation": self.attn_implementation,
            "bettertransformer": self.bettertransformer,
            "cpu_offload": self.cpu_offload,
            "compile": self.compile,
        }


_BUILTIN = (
    OptimizationConfig("fp32", "fp32, eager attention: the reference every other configuration is measured against"),
    OptimizationConfig("bettertransformer", "optimum BetterTransformer fused attention", bettertransformer=True),
    OptimizationConfig(
        "flash_attention_2",
        "FlashAttention-2 kernels (they require half precision: runs in bf16)",
        dtype="bfloat16",
        attn_implementation="flash_attention_2",
    ),
    OptimizationConfig("fp16", "half precision weights and activations", dtype="float16"),
    OptimizationConfig("bf16", "bfloat16 weights and activations", dtype="bfloat16"),
    OptimizationConfig("cpu_offload", "idle sub-models wait in CPU RAM (accelerate)", cpu_offload=True),
    OptimizationConfig(
        "offload+bettertransformer",
        "CPU offload with BetterTransformer",
        cpu_offload=True,
        bettertransformer=True,
    ),
    OptimizationConfig(
        "offload+bettertransformer+fp16",
        "the blog's best: offload, BetterTransformer, fp16",
        dtype="float16",
        cpu_offload=True,
        bettertransformer=True,
    ),
    OptimizationConfig("bettertransformer+fp16", "BetterTransformer in fp16", dtype="float16", bettertransformer=True),
    OptimizationConfig(
        "fp16+flash_attention_2",
        "FlashAttention-2 in fp16",
        dtype="float16",
        attn_implementation="flash_attention_2",
    ),
    OptimizationConfig("offload+fp16", "CPU offload in fp16", dtype="float16", cpu_offload=True),
    OptimizationConfig("torch_compile", "semantic, coarse and fine compiled with torch.compile", compile=True),
)

CONFIGS: dict[str, OptimizationConfig] = {c.name: c for c in _BUILTIN}


def register(config: OptimizationConfig, *, replace: bool = False) -> OptimizationConfig:
    """Add a configuration (used by tests to inject faults; by users for experiments)."""
    if config.name in CONFIGS and not replace:
        raise ValueError(f"configuration {config.name!r} is already registered")
    CONFIGS[config.name] = config
    return config


def get(name: str) -> OptimizationConfig:
    try:
        return CONFIGS[name]
    except KeyError:
        known = ", ".join(n for n, c in CONFIGS.items() if not c.test_only)
        raise KeyError(f"unknown configuration {name!r}; known: {known}") from None


def select(names: Iterable[str] | None = None, *, include_test_only: bool = False) -> list[OptimizationConfig]:
    if names:
        return [get(n) for n in names]
    return [c for c in CONFIGS.values() if include_test_only or not c.test_only]


# --- availability -----------------------------------------------------------------------------------------


def _needs_accelerator(feature: str, stack: Stack, device_type: str) -> str | None:
    if stack.accelerator is None:
        return f"{feature} needs an accelerator; none found"
    if device_type == "cpu":
        return f"{feature} needs an accelerator; this run targets the cpu (--bark-device)"
    return None


def _bettertransformer(stack: Stack, device_type: str) -> list[str]:
    why = compat.bettertransformer_missing(stack)
    return [f"bettertransformer {why}"] if why else []


def _offload(stack: Stack, device_type: str) -> list[str]:
    reasons = [why] if (why := _needs_accelerator("cpu_offload", stack, device_type)) else []
    if stack.version("accelerate") is None:
        reasons.append("cpu_offload needs the accelerate package; not installed")
    if stack.offload_defect:
        reasons.append(f"cpu_offload is broken on this stack: {stack.offload_defect}")
    return reasons


def _flash_attention_2(stack: Stack, device_type: str) -> list[str]:
    missing = []
    if stack.accelerator != "cuda" or device_type != "cuda":
        missing.append(f"no CUDA device (running on {device_type})")
    if stack.version("flash-attn") is None:
        missing.append("flash-attn not installed")
    return ["flash_attention_2 needs CUDA and the flash-attn package; found " + ", ".join(missing)] if missing else []


def _compile(stack: Stack, device_type: str) -> list[str]:
    if device_type == "cpu" and stack.cxx_compiler is None:
        return ["torch_compile needs a C++ compiler for inductor's CPU backend; none found (set CXX)"]
    if device_type == "cuda" and stack.version("triton") is None:
        return ["torch_compile needs triton on CUDA; not installed"]
    return []


def _fp16(stack: Stack, device_type: str) -> list[str]:
    if device_type == "cpu" and version_lt(stack.version("torch"), "2.1"):
        return [f"fp16 on cpu needs torch>=2.1 (half LayerNorm kernel); found torch {stack.version('torch')}"]
    return []


# What each change a configuration makes needs, one entry per change: whether the configuration makes it, and
# every reason it cannot be made here. A new kind of change is one entry.
_NEEDS: tuple[tuple[Callable[[OptimizationConfig], bool], Callable[[Stack, str], list[str]]], ...] = (
    (lambda c: c.bettertransformer, _bettertransformer),
    (lambda c: c.cpu_offload, _offload),
    (lambda c: c.attn_implementation == "flash_attention_2", _flash_attention_2),
    (lambda c: c.compile, _compile),
    (lambda c: c.dtype == "float16", _fp16),
)


def unavailable_reasons(config: OptimizationConfig, stack: Stack, device_type: str) -> list[str]:
    """Every reason `config` cannot run here, each naming what is missing and what was found."""
    return [why for makes, needs in _NEEDS if makes(config) for why in needs(stack, device_type)]


def unavailable_reason(config: OptimizationConfig, stack: Stack, device_type: str) -> str | None:
    reasons = unavailable_reasons(config, stack, device_type)
    return "; and ".join(reasons) if reasons else None
