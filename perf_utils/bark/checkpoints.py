"""Which Bark checkpoint to measure, and the embedded `tiny` one built offline.

The tiny checkpoint is saved with `save_pretrained` and read back with `from_pretrained`, so the loading
code a real checkpoint goes through is exercised too. It is cached per transformers version (a checkpoint
saved by transformers 5 does not generate under 4.48) and per fixture version (bump it when the recipe
changes so stale caches are never reused).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

TINY = "tiny"
# 2: the tokenizer keeps its vocabulary under transformers 5; 3: weights drawn by the suite itself (own_weights)
TINY_FIXTURE_VERSION = 3
TINY_SEED = 1234
HUB_CHECKPOINTS = ("suno/bark-small", "suno/bark")
ENV_CHECKPOINT = "BARK_PERF_CHECKPOINT"
ENV_CACHE = "BARK_PERF_CACHE"

# Bark's real vocabulary sizes, in every built checkpoint (so embedding and logits shapes are Bark's).
_VOCAB = {
    "semantic": {"input_vocab_size": 129_600, "output_vocab_size": 10_048},
    "coarse": {"input_vocab_size": 12_096, "output_vocab_size": 12_096},
    "fine": {"input_vocab_size": 1_056, "output_vocab_size": 1_056, "n_codes_total": 8, "n_codes_given": 1},
}


@dataclass(frozen=True)
class Shape:
    """A checkpoint the suite builds itself, with random weights of its own (`own_weights`): the GPTs' body, the
    codec (EncodecConfig's arguments; empty: its defaults, Bark's 24 kHz codec) and the fine model's window."""

    gpt: dict[str, Any]
    codec: dict[str, Any] = field(default_factory=dict)
    fine_window: dict[str, int] = field(default_factory=dict)  # empty: Bark's 1024 frames, history 512
    summary: str = ""


# Adding a built checkpoint is one entry here. The real-shaped ones follow the published suno/bark-small and
# suno/bark configs (each GPT 768 wide, 12 layers, 12 heads / 1024, 24, 16; no biases; a 1024 block; the real
# vocabularies; the default EnCodec; the default fine window): timing and memory depend on the shapes, not on
# the values of the weights. They are never confused with the real checkpoints: their keys say `random:`.
BUILT: dict[str, Shape] = {
    TINY: Shape(
        # The fine model always pads its window to max_fine_input_length (1024 in Bark); with a tiny body that
        # padding dominates a CPU run, so the tiny fixture uses a 256-frame window.
        gpt={"hidden_size": 32, "num_layers": 2, "num_heads": 2, "block_size": 1024},
        codec={
            "num_filters": 4,
            "hidden_size": 16,
            "codebook_size": 1024,
            "codebook_dim": 16,
            "upsampling_ratios": [8, 5, 4, 2],
            "target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0],
            "sampling_rate": 24_000,
        },  # fmt: skip
        fine_window={"max_fine_input_length": 256, "max_fine_history_length": 128},
        summary="2 layers, 2 heads, 32 wide, a small EnCodec: the chain on any CPU in a second",
    ),
    "random:bark-small": Shape(
        gpt={"hidden_size": 768, "num_layers": 12, "num_heads": 12, "block_size": 1024, "bias": False},
        summary="suno/bark-small's shapes, random weights (404.4M parameters)",
    ),
    "random:bark": Shape(
        gpt={"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "block_size": 1024, "bias": False},
        summary="suno/bark's shapes, random weights (1,101M parameters)",
    ),
}

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_PUNCT = list(".,!?;:'\"-()")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found or fetched; the message says how to get it."""


@dataclass(frozen=True)
class Checkpoint:
    key: str  # what baselines are keyed by: "tiny", "random:bark-small", "suno/bark-small", "local:<folder>"
    path: Path  # a local folder that from_pretrained reads
    kind: str  # "tiny" | "random" (built, real-shaped) | "hub" | "local"
    revision: str | None = None

    @property
    def spec(self) -> str:
        """What `resolve` takes to find this checkpoint again (in another process)."""
        return str(self.path) if self.kind == "local" else self.key


def tiny_vocabulary() -> list[str]:
    """A fixed WordPiece vocabulary: training one is not deterministic, ids would drift between builds."""
    from perf_utils.bark.workload import PROMPTS

    words = sorted({w.strip("".join(_PUNCT)) for p in PROMPTS for w in p.split()} - {""})
    return _SPECIALS + list(_CHARS) + ["##" + c for c in _CHARS] + _PUNCT + words


def cache_root() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "bark-perf")


def built_dir(name: str) -> Path:
    import transformers

    return cache_root() / f"{name.replace(':', '-')}-v{TINY_FIXTURE_VERSION}-transformers-{transformers.__version__}"


def own_weights(model: torch.nn.Module, seed: int) -> None:
    """Draw every parameter (and the codec's codebooks) from the suite's own generator, seeded per tensor name, so
    the tiny checkpoint computes the same function under every supported stack. transformers' own initialization
    does not: built under 4.48.3 and 5.24.0 from the same seed, the three GPTs matched but 44 codec tensors (conv
    biases, LSTM weights) did not (measured 2026-11-27). The codebooks, all zeros after init, get values too, so
    the decoded audio depends on the codes (with zero codebooks every code decoded to the same sound)."""
    import zlib

    def draw(name: str, shape: torch.Size, scale: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed + zlib.crc32(name.encode()))
        return torch.randn(shape, generator=g) * scale

    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, p in params.items():
            if name.endswith("parametrizations.weight.original0"):
                continue  # a weight norm's magnitude: set from its direction below
            if p.ndim >= 2:
                p.copy_(draw(name, p.shape, p[0].numel() ** -0.5))
            elif ".layernorm" in name and name.endswith(".weight"):
                p.fill_(1.0)
            else:
                p.copy_(draw(name, p.shape, 0.02))
        for name, g in params.items():
            if name.endswith("parametrizations.weight.original0"):
                v = params[name[: -len("original0")] + "original1"]
                g.copy_(torch.linalg.vector_norm(v, dim=tuple(range(1, v.ndim)), keepdim=True))
        for name, buf in model.named_buffers():
            if name.endswith("codebook.embed") or name.endswith("codebook.embed_avg"):
                buf.copy_(draw(name.removesuffix("_avg"), buf.shape, 1.0))


def bark_config(name: str) -> Any:
    """The BarkConfig of a built checkpoint (no weights: cheap, so even suno/bark's shapes are checked in CI)."""
    from transformers import BarkCoarseConfig, BarkConfig, BarkFineConfig, BarkSemanticConfig, EncodecConfig

    shape = BUILT[name]
    return BarkConfig(
        semantic_config=BarkSemanticConfig(**shape.gpt, **_VOCAB["semantic"]).to_dict(),
        coarse_acoustics_config=BarkCoarseConfig(**shape.gpt, **_VOCAB["coarse"]).to_dict(),
        fine_acoustics_config=BarkFineConfig(**shape.gpt, **_VOCAB["fine"]).to_dict(),
        codec_config=EncodecConfig(**shape.codec).to_dict(),
    )


def build(target: Path, name: str = TINY) -> None:
    """Write the built checkpoint `name` (model and the tiny's processor) into `target` (which must not exist)."""
    from transformers import BarkModel, BarkProcessor, BertTokenizerFast
    from transformers.models.bark.generation_configuration_bark import (
        BarkCoarseGenerationConfig,
        BarkFineGenerationConfig,
        BarkGenerationConfig,
        BarkSemanticGenerationConfig,
    )

    from perf_utils.bark.compat import make_generation_config

    config = bark_config(name)
    with torch.random.fork_rng(devices=[]):  # transformers' own init draws from the global generator
        model = BarkModel(config)
    own_weights(model, TINY_SEED)
    model.generation_config = make_generation_config(
        BarkGenerationConfig(
            semantic_config=BarkSemanticGenerationConfig().to_dict(),
            coarse_acoustics_config=BarkCoarseGenerationConfig().to_dict(),
            fine_acoustics_config=BarkFineGenerationConfig(**BUILT[name].fine_window).to_dict(),
            sample_rate=config.codec_config.sampling_rate,
            codebook_size=config.codec_config.codebook_size,
        )
    )
    target.mkdir(parents=True)
    vocab_file = target / "vocab.txt"
    vocab_file.write_text("\n".join(tiny_vocabulary()) + "\n", encoding="utf-8")
    # Cased like Bark's real tokenizer; the normalizer's lowercasing follows do_lower_case. The vocabulary goes
    # positionally: 4.x names that parameter `vocab_file`, 5.x `vocab` (and silently ignores `vocab_file=`,
    # leaving only the 5 special tokens: every prompt became [UNK]s).
    tokenizer = BertTokenizerFast(str(vocab_file), do_lower_case=False)
    model.save_pretrained(target)
    BarkProcessor(tokenizer=tokenizer).save_pretrained(target)


def ensure_built(name: str = TINY) -> Path:
    """Build a checkpoint once per cache key; atomic, so a crash never leaves a half-written one."""
    target = built_dir(name)
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build(staging / "ckpt", name)
        try:
            os.replace(staging / "ckpt", target)
        except OSError:
            if not (target / "config.json").exists():  # lost a race to a complete build: fine
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _fetch_hint(repo_id: str) -> str:
    return (
        f"fetch it beforehand on a machine with network access: `hf download {repo_id}` "
        f"(or `huggingface-cli download {repo_id}`), then copy the Hugging Face cache "
        f"(~/.cache/huggingface, or $HF_HOME) here, or pass a local folder with --bark-checkpoint PATH"
    )


def _resolve_hub(repo_id: str) -> Checkpoint:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(repo_id, local_files_only=True)
    except LocalEntryNotFoundError:
        if os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
            raise CheckpointError(
                f"checkpoint {repo_id!r} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
                + _fetch_hint(repo_id)
            ) from None
        try:
            path = snapshot_download(repo_id)
        except Exception as exc:  # noqa: BLE001 - any download failure gets the same advice
            raise CheckpointError(
                f"checkpoint {repo_id!r} is not cached and could not be downloaded ({type(exc).__name__}); "
                + _fetch_hint(repo_id)
            ) from exc
    return Checkpoint(key=repo_id, path=Path(path), kind="hub", revision=Path(path).name)


def resolve(spec: str | None = None) -> Checkpoint:
    """`tiny` (default), a built real-shaped one (`random:bark-small`, `random:bark`), a Hub id such as
    `suno/bark-small`, or a local folder."""
    spec = spec or os.environ.get(ENV_CHECKPOINT) or TINY
    if spec in BUILT:
        kind = "tiny" if spec == TINY else "random"
        return Checkpoint(key=spec, path=ensure_built(spec), kind=kind, revision=f"v{TINY_FIXTURE_VERSION}")
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise CheckpointError(f"checkpoint folder {str(local)!r} has no config.json; is it a saved BarkModel?")
        return Checkpoint(key=f"local:{local.resolve().name}", path=local.resolve(), kind="local")
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return _resolve_hub(spec)
    raise CheckpointError(
        f"checkpoint {spec!r} is neither a built one ({', '.join(BUILT)}), a Hub id ({', '.join(HUB_CHECKPOINTS)}) "
        "nor an existing folder"
    )
