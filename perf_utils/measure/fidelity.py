"""Fidelity: an optimization must compute the same thing, not only run faster.

A lost causal mask, a dtype overflow or a wrong offload device can make a configuration faster while it computes
something else; timing cannot see that. For every configuration this compares, against the fp32 eager reference
of the same checkpoint on the same inputs and without any sampling:
- teacher-forced logits of the semantic, coarse and fine models on fixed token sequences (relative L2 error of
  the logits, and top-1 agreement), called as `generate` calls them: with no padding mask. Bark's generate never
  masks a position in its GPTs (the semantic model turns the processor's mask into pad tokens; coarse and fine
  get none), so a configuration that ignores padding masks computes the same audio (tested). Judging a
  left-padded, masked sample instead failed optimum's BetterTransformer, whose Bark attention passes
  `attn_mask=None`, as "computes something else" (top-1 0.571: exactly the unpadded sample's 48 of 84
  positions; on an H200 and on the CPU);
- the codec's audio for fixed codes (signal-to-noise ratio in dB);
- each sample of a batch against the same sample run alone (batching must not change a result).
This module computes the figures (torch); the typed result, the tolerances and the verdict live in
`record.fidelity`, so judging a saved record needs no torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from perf_utils.record.fidelity import Fidelity, SubmodelFigures
from perf_utils.record.golden import Fingerprint, SubmodelPrint

FIDELITY_SEED = 4321
SEQ_LEN = 48
FINE_CODEBOOKS = (1, 4, 7)
CODEC_FRAMES = 24
SNR_CAP_DB = 200.0  # identical audio; JSON has no infinity


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(FIDELITY_SEED)


def fixed_inputs(model: Any) -> dict[str, torch.Tensor]:
    """Token sequences and codes drawn once from a fixed seed, in each sub-model's vocabulary (on the CPU)."""
    g = _gen()
    sem_vocab = model.config.semantic_config.input_vocab_size
    coarse_vocab = model.config.coarse_acoustics_config.input_vocab_size
    fine = model.config.fine_acoustics_config
    n_codes = fine.n_codes_total
    codebook = model.generation_config.codebook_size
    return {
        "semantic": torch.randint(0, sem_vocab, (2, SEQ_LEN), generator=g),
        "coarse": torch.randint(0, coarse_vocab, (2, SEQ_LEN), generator=g),
        "fine": torch.randint(0, codebook, (2, SEQ_LEN, n_codes), generator=g),
        "codes": torch.randint(0, codebook, (2, n_codes, CODEC_FRAMES), generator=g),
    }


def _device(model: Any) -> torch.device:
    return model.device  # BarkModel.device follows offload hooks to the execution device


class StageError(RuntimeError):
    """A fidelity computation failed; the message names the sub-model."""


@contextmanager
def _named(stage: str) -> Iterator[None]:
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - re-raised with the sub-model's name
        raise StageError(f"{stage}: {type(exc).__name__}: {exc}") from exc


@torch.no_grad()
def outputs(model: Any) -> dict[str, torch.Tensor]:
    """Everything fidelity compares, as fp32 tensors on the CPU."""
    inputs = fixed_inputs(model)
    dev = _device(model)
    out: dict[str, torch.Tensor] = {}
    for name, sub in (("semantic", model.semantic), ("coarse", model.coarse_acoustics)):
        ids = inputs[name].to(dev)

        def logits(token_ids: torch.Tensor, sub: Any = sub) -> Any:
            # Token ids, not embeddings: under CPU offload the sub-model's hook moves it to the device first
            # (embedding outside the forward found the coarse model's embedding still on the CPU, seen on an H200).
            return sub(input_ids=token_ids, use_cache=False).logits.float().cpu()

        with _named(name):
            out[name] = logits(ids)
            out[name + "_alone"] = logits(ids[:1])
            out[name + "_batched"] = logits(ids)[:1]
    fine_ids = inputs["fine"].to(dev)
    with _named("fine"):
        out["fine"] = torch.stack(
            [model.fine_acoustics(codebook_idx=i, input_ids=fine_ids).logits.float().cpu() for i in FINE_CODEBOOKS]
        )
        out["fine_alone"] = (
            model.fine_acoustics(codebook_idx=FINE_CODEBOOKS[0], input_ids=fine_ids[:1]).logits.float().cpu()
        )
    out["fine_batched"] = out["fine"][0, :1]
    with _named("codec"):
        out["codec"] = _decode(model, inputs["codes"])
        out["codec_alone"] = _decode(model, inputs["codes"][:1])
    out["codec_batched"] = out["codec"][:1]
    return out


def _decode(model: Any, codes: torch.Tensor) -> torch.Tensor:
    """Decode as `BarkModel.generate` does. Bark never calls the codec's forward, so under CPU offload its hook
    never fires: generate moves the codec to the device itself and offloads it afterwards (without this the
    codec stayed on the CPU: an index_select device error on an H200)."""
    if getattr(model, "fine_acoustics_hook", None) is not None:
        model.fine_acoustics_hook.offload()
        model.codec_model = model.codec_model.to(_device(model))
    try:
        return model.codec_decode(codes.to(_device(model))).float().cpu()
    finally:
        if getattr(model, "codec_model_hook", None) is not None:
            model.codec_model_hook.offload()


FINGERPRINT_POSITIONS = slice(0, SEQ_LEN, 12)  # 4 positions of each sequence
FINGERPRINT_LOGITS = 8  # the first logits of each
FINGERPRINT_AUDIO = 64  # evenly spaced samples of the decoded audio


def fingerprint(reference: dict[str, torch.Tensor]) -> Fingerprint:
    """The golden fingerprint of fp32 eager outputs (`outputs` of the reference model): per GPT, the logits of
    the first sample at 4 positions (first 8 each), their norm over every position, and the argmax at each; for
    the codec, 64 evenly spaced samples of the audio and its norm (`record.golden`)."""
    prints: dict[str, SubmodelPrint] = {}
    for name in ("semantic", "coarse"):
        logits = reference[name]
        prints[name] = SubmodelPrint(
            values=logits[0, FINGERPRINT_POSITIONS, :FINGERPRINT_LOGITS].flatten().tolist(),
            norm=float(torch.linalg.vector_norm(logits)),
            argmax=logits.argmax(-1).flatten().tolist(),
        )
    fine = reference["fine"]  # (codebooks, batch, positions, vocabulary)
    prints["fine"] = SubmodelPrint(
        values=fine[:, 0, FINGERPRINT_POSITIONS, :FINGERPRINT_LOGITS].flatten().tolist(),
        norm=float(torch.linalg.vector_norm(fine)),
        argmax=fine[:, 0].argmax(-1).flatten().tolist(),
    )
    audio = reference["codec"].flatten()
    step = max(audio.numel() // FINGERPRINT_AUDIO, 1)
    prints["codec"] = SubmodelPrint(values=audio[::step][:FINGERPRINT_AUDIO].tolist(), norm=float(audio.norm()))
    return Fingerprint(prints)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-30))


def top1(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x.argmax(-1) == ref.argmax(-1)).float().mean())


def snr_db(x: torch.Tensor, ref: torch.Tensor) -> float:
    noise = float(((x - ref) ** 2).sum())
    signal = float((ref**2).sum())
    return SNR_CAP_DB if noise == 0 else min(SNR_CAP_DB, 10 * math.log10(max(signal, 1e-30) / noise))


def compare_outputs(now: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, SubmodelFigures]:
    """Per sub-model figures."""
    result: dict[str, SubmodelFigures] = {}
    for name in ("semantic", "coarse"):
        result[name] = SubmodelFigures(
            rel_err=rel_err(now[name], ref[name]),
            top1=top1(now[name], ref[name]),
            batch_rel_err=rel_err(now[name + "_batched"], now[name + "_alone"]),
        )
    result["fine"] = SubmodelFigures(
        rel_err=rel_err(now["fine"], ref["fine"]),
        top1=top1(now["fine"], ref["fine"]),
        batch_rel_err=rel_err(now["fine_batched"], now["fine_alone"]),
    )
    result["codec"] = SubmodelFigures(
        snr_db=snr_db(now["codec"], ref["codec"]),
        batch_rel_err=rel_err(now["codec_batched"], now["codec_alone"]),
    )
    return result


def judged_precision(precision: str, device: torch.device) -> str:
    """The tolerance fp32 is held to where it runs: on NVIDIA, PyTorch runs fp32 convolutions in TF32 by default
    (`torch.backends.cudnn.allow_tf32`, 10 mantissa bits), so the codec of a batch and of a sample alone can
    differ far beyond float32 rounding (bark-shaped fp32 failed the exact tolerance on an H200)."""
    return "tf32" if precision == "exact" and device.type == "cuda" and _tf32_on() else precision


def _tf32_on() -> bool:
    return bool(torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32)


def check(model: Any, reference: dict[str, torch.Tensor], precision: str) -> Fidelity:
    """The fidelity of a loaded configuration against the reference outputs; `not checked` when it cannot run."""
    try:
        return Fidelity.judged(compare_outputs(outputs(model), reference), precision)
    except Exception as exc:  # noqa: BLE001 - the check could not run: say so, keep the timings
        return Fidelity.not_checked(precision, exc)
