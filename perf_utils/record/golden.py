"""The golden fingerprint: what fp32 eager Bark computes for a checkpoint, pinned, so an upgrade that changes
Bark's numbers is caught.

Fidelity compares every configuration with the fp32 eager run of the same stack; an upgrade that changes what eager
Bark computes (an attention scaling, an embedding, the codec, a generation default) moves that reference with it,
and every configuration still agrees. The fingerprint pins the reference itself, as transformers' integration
tests pin logit slices, but per sub-model and with measured tolerances: on the fidelity inputs, fixed slices of
each GPT's teacher-forced logits, their norm and their argmax, and a strided slice and the RMS of the decoded
audio. It is kept per checkpoint and revision, not per hardware (`golden/<checkpoint>.json`), compared on every
run that computes the reference, and replaced only on request after a clean run (`--bark-save-golden`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perf_utils.record import atomic

GOLDEN_SCHEMA = 2
# Why a golden of an older schema cannot be compared: its fingerprint was taken on other inputs.
_RETIRED = {
    1: "taken on a left-padded, attention-masked sample, which Bark's generate never computes (schema 2 "
    "fingerprints what generate computes, with no padding mask)",
}
# Measured on the CPU (2026-11-27): 1 against 2 threads moved the logits by 0 and the audio by 3e-7 (relative);
# transformers 4.48.3 against 5.24.0 moved nothing. The codec's convolutions run in TF32 on NVIDIA GPUs by default
# (cuDNN), ~1e-3: the audio gets the wider tolerance. A change of Bark's computation moves them by far more (the
# tests' injected 1% scaling of one sub-model's logits: 1e-2). The golden taken on this CPU matched tiny's fp32 on an
# NVIDIA H200 (torch 2.11.0+cu130, transformers 5.17.0, 2026-11-27; schema 1's inputs).
LOGITS_REL_TOL = 1e-3
AUDIO_REL_TOL = 1e-2
ARGMAX_AGREEMENT = 0.98  # near-ties may flip between kernels


@dataclass
class SubmodelPrint:
    """One sub-model's figures: a fixed slice of its output, the output's L2 norm, and (logits) its argmax."""

    values: list[float]
    norm: float
    argmax: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"values": list(self.values), "norm": self.norm, "argmax": list(self.argmax)}


@dataclass
class Fingerprint:
    submodels: dict[str, SubmodelPrint]

    def to_dict(self) -> dict[str, Any]:
        return {name: s.to_dict() for name, s in self.submodels.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fingerprint:
        return cls({name: SubmodelPrint(**s) for name, s in data.items()})


def _rel(now: list[float], ref: list[float]) -> float:
    num = math.sqrt(sum((a - b) ** 2 for a, b in zip(now, ref, strict=True)))
    den = math.sqrt(sum(b * b for b in ref))
    return num / den if den else (0.0 if num == 0 else math.inf)


def differences(golden: Fingerprint, now: Fingerprint) -> list[str]:
    """Every way `now` departs from `golden`, naming the sub-model and the figure; empty when it matches."""
    problems = []
    for name, ref in golden.submodels.items():
        cur = now.submodels.get(name)
        if cur is None:
            problems.append(f"{name}: not in this run's fingerprint")
            continue
        tol = AUDIO_REL_TOL if not ref.argmax else LOGITS_REL_TOL
        what = "audio" if not ref.argmax else "logits"
        if len(cur.values) != len(ref.values):
            problems.append(f"{name} {what}: {len(cur.values)} values fingerprinted, golden has {len(ref.values)}")
            continue
        if (err := _rel(cur.values, ref.values)) > tol:
            problems.append(f"{name} {what} slice differs from golden: relative error {err:.1e} > {tol:.0e}")
        if ref.norm and (change := abs(cur.norm - ref.norm) / ref.norm) > tol:
            problems.append(f"{name} {what} norm {cur.norm:.6g}, golden {ref.norm:.6g} ({change:.1e} > {tol:.0e})")
        if ref.argmax and len(cur.argmax) == len(ref.argmax):
            agree = sum(a == b for a, b in zip(cur.argmax, ref.argmax, strict=True)) / len(ref.argmax)
            if agree < ARGMAX_AGREEMENT:
                problems.append(
                    f"{name} argmax agrees with golden at {agree:.1%} of positions < {ARGMAX_AGREEMENT:.0%}"
                )
    return problems


@dataclass
class Golden:
    """A stored fingerprint and where it came from."""

    checkpoint: dict[str, Any]  # key, revision
    fingerprint: Fingerprint
    taken_on: str  # hardware
    environment: dict[str, Any]
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))

    def describe(self) -> str:
        packages = self.environment.get("packages", {})
        stack = ", ".join(f"{k} {packages[k]}" for k in ("torch", "transformers") if packages.get(k))
        return f"{self.checkpoint['key']} {self.checkpoint.get('revision') or ''}, taken on {self.taken_on} ({stack})"


class GoldenError(Exception):
    """A golden file that cannot be used; names the file."""


def golden_path(folder: Path, checkpoint_key: str) -> Path:
    return folder / (checkpoint_key.replace("/", "--").replace(":", "-") + ".json")


def load(path: Path) -> Golden:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data.get("schema_version")
        if version in _RETIRED:
            raise GoldenError(
                f"{path}: schema_version {version}, {_RETIRED[version]}; take it again on the stack you trust with "
                "--bark-save-golden"
            )
        if version != GOLDEN_SCHEMA:
            raise GoldenError(f"{path}: unknown schema_version {version!r}")
        return Golden(
            checkpoint=data["checkpoint"],
            fingerprint=Fingerprint.from_dict(data["fingerprint"]),
            taken_on=data["taken_on"],
            environment=data.get("environment", {}),
            created=data.get("created", ""),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GoldenError(f"{path}: not a golden fingerprint ({type(exc).__name__}: {exc})") from None


def write_atomic(path: Path, golden: Golden) -> None:
    data = {
        "schema_version": GOLDEN_SCHEMA,
        "checkpoint": golden.checkpoint,
        "taken_on": golden.taken_on,
        "created": golden.created,
        "environment": golden.environment,
        "fingerprint": golden.fingerprint.to_dict(),
    }
    atomic.write_json(path, data)
