"""Fidelity: an optimization must compute the same thing, not only run faster.

A broken attention mask, a dtype overflow or a wrong offload device can make a configuration faster while it
computes something else; timing cannot see that. For every configuration this compares, against the fp32 eager
reference of the same checkpoint on the same inputs and without any sampling:
- teacher-forced logits of the semantic, coarse and fine models on fixed token sequences (relative L2 error of
  the logits, and top-1 agreement), with a left-padded sample so the attention mask matters;
- the codec's audio for fixed codes (signal-to-noise ratio in dB);
- each sample of a batch against the same sample run alone (batching must not change a result).
Tolerances per kind of change are data (`TOLERANCES`, keyed by `OptimizationConfig.precision`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from perf_utils import compat

FIDELITY_SEED = 4321
SEQ_LEN = 48
PAD = 12  # left padding of the second sample: its first PAD positions are masked out
FINE_CODEBOOKS = (1, 4, 7)
CODEC_FRAMES = 24
SNR_CAP_DB = 200.0  # identical audio; JSON has no infinity


@dataclass(frozen=True)
class Tolerance:
    rel_err: float  # max relative L2 error of logits (per sub-model)
    top1: float  # min fraction of positions whose argmax agrees
    snr_db: float  # min codec SNR


# Measured on the tiny checkpoint on the CPU (2026-11-26): fp32 changes rel_err 0, top-1 1.0, identical audio;
# fp16 rel_err 7e-4, top-1 >= 0.988, SNR 46.6 dB; bf16 rel_err 5.6e-3, top-1 >= 0.964, SNR 33.1 dB. Set with a
# margin of about 7x on the error and 13-16 dB on the SNR; "exact" allows float32 rounding of another kernel.
TOLERANCES: dict[str, Tolerance] = {
    "exact": Tolerance(rel_err=1e-4, top1=0.98, snr_db=80.0),
    "float16": Tolerance(rel_err=5e-3, top1=0.95, snr_db=30.0),
    "bfloat16": Tolerance(rel_err=4e-2, top1=0.90, snr_db=20.0),
}
# "Markedly worse than the baseline figure": the error grew this many times (above a floor where it is noise).
WORSE_FACTOR = 10.0
REL_ERR_FLOOR = 1e-5


@dataclass
class SubmodelFidelity:
    rel_err: float | None = None
    top1: float | None = None
    snr_db: float | None = None
    batch_rel_err: float | None = None  # a batched sample against the same sample alone


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
    mask = torch.ones(2, SEQ_LEN, dtype=torch.long)
    mask[1, :PAD] = 0
    return {
        "semantic": torch.randint(0, sem_vocab, (2, SEQ_LEN), generator=g),
        "coarse": torch.randint(0, coarse_vocab, (2, SEQ_LEN), generator=g),
        "mask": mask,
        "fine": torch.randint(0, codebook, (2, SEQ_LEN, n_codes), generator=g),
        "codes": torch.randint(0, codebook, (2, n_codes, CODEC_FRAMES), generator=g),
    }


def _device(model: Any) -> torch.device:
    return model.device  # BarkModel.device follows offload hooks to the execution device


@torch.no_grad()
def outputs(model: Any) -> dict[str, torch.Tensor]:
    """Everything fidelity compares, as fp32 tensors on the CPU."""
    inputs = fixed_inputs(model)
    dev = _device(model)
    out: dict[str, torch.Tensor] = {}
    for name, sub in (("semantic", model.semantic), ("coarse", model.coarse_acoustics)):
        ids, mask = inputs[name].to(dev), inputs["mask"].to(dev)

        def logits(token_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, sub: Any = sub) -> Any:
            # Embed first, as Bark's own generate does: under CPU offload the semantic embedding layer has a
            # hook of its own that brings it to the device (a plain forward with input_ids finds it on the CPU).
            embeds = sub.input_embeds_layer(token_ids)
            kwargs = {compat.embeds_kwarg(sub): embeds, "attention_mask": attention_mask, "use_cache": False}
            return sub(**kwargs).logits.float().cpu()

        out[name] = logits(ids, mask)
        out[name + "_alone"] = logits(ids[:1])
        out[name + "_batched"] = logits(ids)[:1]
    fine_ids = inputs["fine"].to(dev)
    out["fine"] = torch.stack(
        [model.fine_acoustics(codebook_idx=i, input_ids=fine_ids).logits.float().cpu() for i in FINE_CODEBOOKS]
    )
    out["fine_alone"] = (
        model.fine_acoustics(codebook_idx=FINE_CODEBOOKS[0], input_ids=fine_ids[:1]).logits.float().cpu()
    )
    out["fine_batched"] = out["fine"][0, :1]
    audio = model.codec_decode(inputs["codes"].to(dev))
    out["codec"] = audio.float().cpu()
    out["codec_alone"] = model.codec_decode(inputs["codes"][:1].to(dev)).float().cpu()
    out["codec_batched"] = out["codec"][:1]
    return out


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref).clamp_min(1e-30))


def top1(x: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    agree = x.argmax(-1) == ref.argmax(-1)
    if valid is not None:
        agree = agree[valid]
    return float(agree.float().mean())


def snr_db(x: torch.Tensor, ref: torch.Tensor) -> float:
    noise = float(((x - ref) ** 2).sum())
    signal = float((ref**2).sum())
    return SNR_CAP_DB if noise == 0 else min(SNR_CAP_DB, 10 * math.log10(max(signal, 1e-30) / noise))


def compare_outputs(now: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> dict[str, SubmodelFidelity]:
    """Per sub-model figures; padded positions of the masked sample are ignored (their output is arbitrary)."""
    valid = torch.ones(2, SEQ_LEN, dtype=torch.bool)
    valid[1, :PAD] = False
    result: dict[str, SubmodelFidelity] = {}
    for name in ("semantic", "coarse"):
        result[name] = SubmodelFidelity(
            rel_err=rel_err(now[name][valid], ref[name][valid]),
            top1=top1(now[name], ref[name], valid),
            batch_rel_err=rel_err(now[name + "_batched"], now[name + "_alone"]),
        )
    result["fine"] = SubmodelFidelity(
        rel_err=rel_err(now["fine"], ref["fine"]),
        top1=top1(now["fine"], ref["fine"]),
        batch_rel_err=rel_err(now["fine_batched"], now["fine_alone"]),
    )
    result["codec"] = SubmodelFidelity(
        snr_db=snr_db(now["codec"], ref["codec"]),
        batch_rel_err=rel_err(now["codec_batched"], now["codec_alone"]),
    )
    return result


def judge(figures: dict[str, SubmodelFidelity], precision: str) -> list[str]:
    """Every way these figures break the tolerance of this kind of change, naming the sub-model."""
    tol = TOLERANCES[precision]
    problems = []
    for name, f in figures.items():
        if f.rel_err is not None and not f.rel_err <= tol.rel_err:
            problems.append(f"{name} logits relative error {f.rel_err:.2e} > {tol.rel_err:.0e}")
        if f.top1 is not None and not f.top1 >= tol.top1:
            problems.append(f"{name} top-1 agreement {f.top1:.3f} < {tol.top1}")
        if f.snr_db is not None and not f.snr_db >= tol.snr_db:
            problems.append(f"{name} audio SNR {f.snr_db:.1f} dB < {tol.snr_db:g} dB")
        if f.batch_rel_err is not None and not f.batch_rel_err <= tol.rel_err:
            problems.append(f"{name} batched differs from alone: relative error {f.batch_rel_err:.2e}")
    return problems


def report(figures: dict[str, SubmodelFidelity], precision: str) -> dict[str, Any]:
    """The JSON-able record stored with a result (and in baselines)."""
    problems = judge(figures, precision)
    return {
        "precision": precision,
        "passed": not problems,
        "problems": problems,
        "submodels": {k: {m: v for m, v in asdict(f).items() if v is not None} for k, f in figures.items()},
    }


def not_checked(precision: str, exc: BaseException) -> dict[str, Any]:
    """The check itself could not run (seen: teacher forcing under CPU offload on CUDA): neither pass nor fail."""
    return {"precision": precision, "passed": None, "problems": [], "error": f"{type(exc).__name__}: {exc}"[:500]}


def worse_than_baseline(now: dict[str, Any], base: dict[str, Any]) -> list[str]:
    """Within tolerance can still be a regression: the error grew markedly against the stored figure."""
    problems = []
    for name, fig in now.get("submodels", {}).items():
        old = base.get("submodels", {}).get(name, {})
        err, old_err = fig.get("rel_err"), old.get("rel_err")
        if err is not None and old_err is not None and err > REL_ERR_FLOOR and err > WORSE_FACTOR * old_err:
            problems.append(f"{name} logits error {err:.2e}, was {old_err:.2e}")
        snr, old_snr = fig.get("snr_db"), old.get("snr_db")
        if snr is not None and old_snr is not None and math.isfinite(old_snr) and snr < old_snr - 20:
            problems.append(f"{name} audio SNR {snr:.1f} dB, was {old_snr:.1f} dB")
    return problems
