"""The fixed work every configuration does, so that timings compare like with like.

Bark's output length depends on sampling and on the dtype; pinning the semantic length
(`semantic_min_new_tokens == semantic_max_new_tokens == N`) makes every configuration produce the same
number of tokens and audio samples, which `check_counts` then enforces.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

PROMPTS: tuple[str, ...] = (
    "Hello, my dog is cute and I need him in my life.",
    "The quick brown fox jumps over the lazy dog.",
    "Speech synthesis turns written text into sound.",
    "Please remember to water the plants on Friday.",
    "Four sub-models run one after another in Bark.",
    "A regression suite keeps yesterday honest.",
    "Numbers like 42 and 1999 are read aloud too.",
    "Is it faster today, or only louder?",
)
PROMPT_ORDER = "cyclic"  # batch b takes prompts 0..b-1, modulo their number (recorded in every run's workload)
SEED = 0
SAMPLING: dict[str, Any] = {"do_sample": True, "coarse_temperature": 0.8, "fine_temperature": 0.4}
DEFAULT_TOKENS = {"cpu": 32, "accelerator": 256}  # 256 is the blog's setting


class WorkloadError(AssertionError):
    """A call did not do the fixed work: comparing its timing with another would be meaningless."""


def default_tokens(device_type: str) -> int:
    return DEFAULT_TOKENS["cpu" if device_type == "cpu" else "accelerator"]


def prompts_hash(prompts: tuple[str, ...] = PROMPTS) -> str:
    return hashlib.sha256(json.dumps(list(prompts)).encode()).hexdigest()[:16]


MIN_TOKENS = 8  # fewer semantic tokens may end the speech at once, and an empty one crashes the codec


@dataclass(frozen=True)
class Workload:
    n_tokens: int
    batch_size: int
    seed: int = SEED
    sampling: dict[str, Any] = field(default_factory=lambda: dict(SAMPLING))

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch size must be at least 1; got {self.batch_size}")
        if self.n_tokens < MIN_TOKENS:
            raise ValueError(f"n_tokens must be at least {MIN_TOKENS} (an immediate EOS crashes the codec); got "
                             f"{self.n_tokens}")  # fmt: skip

    def prompts(self) -> list[str]:
        """The first `batch_size` of the prompts repeated in their order (past 8 they cycle: batch 16 is every
        prompt twice), so batching is measured past the number of distinct prompts."""
        return [PROMPTS[i % len(PROMPTS)] for i in range(self.batch_size)]

    def generate_kwargs(self) -> dict[str, Any]:
        return {
            **self.sampling,
            "semantic_min_new_tokens": self.n_tokens,
            "semantic_max_new_tokens": self.n_tokens,
        }

    def identity(self) -> dict[str, Any]:
        """What must match for two runs to be comparable (batch size is part of each benchmark's id)."""
        return {
            "n_tokens": self.n_tokens,
            "prompts_sha256": prompts_hash(),
            "prompt_order": PROMPT_ORDER,
            "seed": self.seed,
            "sampling": self.sampling,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_inputs(processor: Any, workload: Workload, device: torch.device) -> dict[str, torch.Tensor]:
    """Tokenized prompts padded to Bark's 256 tokens, with the attention mask, on `device`."""
    inputs = processor(workload.prompts())
    return {k: v.to(device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}


@dataclass(frozen=True)
class Counts:
    """What one call produced, per sample."""

    semantic_tokens: int
    coarse_tokens: int
    fine_tokens: int
    audio_samples: int
    batch_size: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def expected_counts(model: Any, workload: Workload) -> Counts:
    """The counts Bark's own arithmetic gives for N semantic tokens (coarse rate / semantic rate, codec hop)."""
    gen = model.generation_config
    semantic, coarse = gen.semantic_config, gen.coarse_acoustics_config
    n_coarse = coarse["n_coarse_codebooks"]
    ratio = coarse["coarse_rate_hz"] / semantic["semantic_rate_hz"] * n_coarse
    frames = math.floor(workload.n_tokens * ratio / n_coarse)
    hop = math.prod(model.config.codec_config.upsampling_ratios)
    n_fine = gen.fine_acoustics_config["n_fine_codebooks"]
    return Counts(workload.n_tokens, frames * n_coarse, frames * n_fine, frames * hop, workload.batch_size)


def check_counts(found: Counts, expected: Counts, where: str) -> None:
    if found != expected:
        raise WorkloadError(
            f"{where}: the call did not do the fixed work; expected {expected.to_dict()}, got {found.to_dict()}"
        )
