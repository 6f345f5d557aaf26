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
from dataclasses import dataclass
from pathlib import Path

import torch

TINY = "tiny"
# 2: the tokenizer keeps its vocabulary under transformers 5; 3: weights drawn by the suite itself (own_weights)
TINY_FIXTURE_VERSION = 3
TINY_SEED = 1234
HUB_CHECKPOINTS = ("suno/bark-small", "suno/bark")
ENV_CHECKPOINT = "BARK_PERF_CHECKPOINT"
ENV_CACHE = "BARK_PERF_CACHE"

# Real vocabulary sizes (so embedding and logits shapes are Bark's), tiny transformer bodies.
_SUB = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "block_size": 1024}
_VOCAB = {
    "semantic": {"input_vocab_size": 129_600, "output_vocab_size": 10_048},
    "coarse": {"input_vocab_size": 12_096, "output_vocab_size": 12_096},
    "fine": {"input_vocab_size": 1_056, "output_vocab_size": 1_056, "n_codes_total": 8, "n_codes_given": 1},
}
_CODEC = {
    "num_filters": 4,
    "hidden_size": 16,
    "codebook_size": 1024,
    "codebook_dim": 16,
    "upsampling_ratios": [8, 5, 4, 2],
    "target_bandwidths": [1.5, 3.0, 6.0, 12.0, 24.0],
    "sampling_rate": 24_000,
}
# The fine model always pads its window to max_fine_input_length (1024 in Bark); with a tiny body that
# padding dominates a CPU run, so the tiny fixture uses a 256-frame window. Real checkpoints keep their own.
_TINY_FINE_WINDOW = {"max_fine_input_length": 256, "max_fine_history_length": 128}

_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_PUNCT = list(".,!?;:'\"-()")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be found or fetched; the message says how to get it."""


@dataclass(frozen=True)
class Checkpoint:
    key: str  # what baselines are keyed by: "tiny", "suno/bark-small", "local:<folder>"
    path: Path  # a local folder that from_pretrained reads
    kind: str  # "tiny" | "hub" | "local"
    revision: str | None = None


def tiny_vocabulary() -> list[str]:
    """A fixed WordPiece vocabulary: training one is not deterministic, ids would drift between builds."""
    from perf_utils.bark.workload import PROMPTS

    words = sorted({w.strip("".join(_PUNCT)) for p in PROMPTS for w in p.split()} - {""})
    return _SPECIALS + list(_CHARS) + ["##" + c for c in _CHARS] + _PUNCT + words


def cache_root() -> Path:
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "bark-perf")


def tiny_dir() -> Path:
    import transformers

    return cache_root() / f"tiny-v{TINY_FIXTURE_VERSION}-transformers-{transformers.__version__}"


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


def build_tiny(target: Path) -> None:
    """Write the tiny model and processor into `target` (which must not exist yet)."""
    from transformers import (
        BarkCoarseConfig,
        BarkConfig,
        BarkFineConfig,
        BarkModel,
        BarkProcessor,
        BarkSemanticConfig,
        BertTokenizerFast,
        EncodecConfig,
    )
    from transformers.models.bark.generation_configuration_bark import (
        BarkCoarseGenerationConfig,
        BarkFineGenerationConfig,
        BarkGenerationConfig,
        BarkSemanticGenerationConfig,
    )

    from perf_utils.bark.compat import make_generation_config

    config = BarkConfig(
        semantic_config=BarkSemanticConfig(**_SUB, **_VOCAB["semantic"]).to_dict(),
        coarse_acoustics_config=BarkCoarseConfig(**_SUB, **_VOCAB["coarse"]).to_dict(),
        fine_acoustics_config=BarkFineConfig(**_SUB, **_VOCAB["fine"]).to_dict(),
        codec_config=EncodecConfig(**_CODEC).to_dict(),
    )
    with torch.random.fork_rng(devices=[]):  # transformers' own init draws from the global generator
        model = BarkModel(config)
    own_weights(model, TINY_SEED)
    model.generation_config = make_generation_config(
        BarkGenerationConfig(
            semantic_config=BarkSemanticGenerationConfig().to_dict(),
            coarse_acoustics_config=BarkCoarseGenerationConfig().to_dict(),
            fine_acoustics_config=BarkFineGenerationConfig(**_TINY_FINE_WINDOW).to_dict(),
            sample_rate=_CODEC["sampling_rate"],
            codebook_size=_CODEC["codebook_size"],
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


def ensure_tiny() -> Path:
    """Build the tiny checkpoint once per cache key; atomic, so a crash never leaves a half-written one."""
    target = tiny_dir()
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=target.name + ".", dir=target.parent))
    try:
        build_tiny(staging / "ckpt")
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
    """`tiny` (default), a Hub id such as `suno/bark-small`, or a local folder."""
    spec = spec or os.environ.get(ENV_CHECKPOINT) or TINY
    if spec == TINY:
        return Checkpoint(key=TINY, path=ensure_tiny(), kind="tiny", revision=f"v{TINY_FIXTURE_VERSION}")
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise CheckpointError(f"checkpoint folder {str(local)!r} has no config.json; is it a saved BarkModel?")
        return Checkpoint(key=f"local:{local.resolve().name}", path=local.resolve(), kind="local")
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return _resolve_hub(spec)
    raise CheckpointError(
        f"checkpoint {spec!r} is neither 'tiny', a Hub id ({', '.join(HUB_CHECKPOINTS)}) nor an existing folder"
    )
