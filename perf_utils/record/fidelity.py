"""The fidelity result, typed: per sub-model figures against the fp32 eager reference, the tolerance each kind of
change is held to, and the verdict. Computing the figures needs torch (`measure.fidelity`); judging them does not.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

OK, FAIL, NOT_CHECKED = "ok", "FAIL", "not checked"


@dataclass(frozen=True)
class Tolerance:
    rel_err: float  # max relative L2 error of logits (per sub-model)
    top1: float  # min fraction of positions whose argmax agrees
    snr_db: float  # min codec SNR


# Measured on the tiny checkpoint on the CPU (2026-11-26): fp32 changes rel_err 0, top-1 1.0, identical audio;
# fp16 rel_err 7e-4, top-1 >= 0.988, SNR 46.6 dB; bf16 rel_err 5.6e-3, top-1 >= 0.964, SNR 33.1 dB. Set with a
# margin of about 7x on the error and 13-16 dB on the SNR; "exact" allows float32 rounding of another kernel.
# Keyed by `OptimizationConfig.precision`.
TOLERANCES: dict[str, Tolerance] = {
    "exact": Tolerance(rel_err=1e-4, top1=0.98, snr_db=80.0),
    # fp32 where NVIDIA runs it in TF32 (measure.fidelity.judged_precision): about fp16's mantissa
    "tf32": Tolerance(rel_err=5e-3, top1=0.95, snr_db=40.0),
    "float16": Tolerance(rel_err=5e-3, top1=0.95, snr_db=30.0),
    "bfloat16": Tolerance(rel_err=4e-2, top1=0.90, snr_db=20.0),
}
# "Markedly worse than the baseline figure": the error grew this many times (above a floor where it is noise),
# or the SNR fell by this many dB.
WORSE_FACTOR = 10.0
REL_ERR_FLOOR = 1e-5
SNR_DROP_DB = 20.0


@dataclass
class SubmodelFigures:
    rel_err: float | None = None
    top1: float | None = None
    snr_db: float | None = None
    batch_rel_err: float | None = None  # a batched sample against the same sample alone

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v is not None}


def tolerance_problems(figures: dict[str, SubmodelFigures], precision: str) -> list[str]:
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


@dataclass
class Fidelity:
    """One configuration's fidelity; `passed` is None when the check could not run (neither pass nor fail)."""

    precision: str
    passed: bool | None
    problems: list[str] = field(default_factory=list)
    submodels: dict[str, SubmodelFigures] = field(default_factory=dict)
    error: str | None = None  # why the check could not run

    @classmethod
    def judged(cls, figures: dict[str, SubmodelFigures], precision: str) -> Fidelity:
        problems = tolerance_problems(figures, precision)
        return cls(precision, not problems, problems, dict(figures))

    @classmethod
    def not_checked(cls, precision: str, exc: BaseException) -> Fidelity:
        """Seen: teacher forcing under CPU offload on CUDA. The timings are kept; the check says it did not run."""
        return cls(precision, None, error=f"{type(exc).__name__}: {exc}"[:500])

    @property
    def status(self) -> str:
        return {True: OK, False: FAIL}.get(self.passed, NOT_CHECKED)  # type: ignore[arg-type]

    @property
    def worst_rel_err(self) -> float:
        return max((f.rel_err for f in self.submodels.values() if f.rel_err is not None), default=0.0)

    def worse_than(self, base: Fidelity) -> list[str]:
        """Within tolerance can still be a regression: the error grew markedly against the stored figure."""
        problems = []
        for name, fig in self.submodels.items():
            old = base.submodels.get(name, SubmodelFigures())
            err, old_err = fig.rel_err, old.rel_err
            if err is not None and old_err is not None and err > REL_ERR_FLOOR and err > WORSE_FACTOR * old_err:
                problems.append(f"{name} logits error {err:.2e}, was {old_err:.2e}")
            snr, old_snr = fig.snr_db, old.snr_db
            if snr is not None and old_snr is not None and math.isfinite(old_snr) and snr < old_snr - SNR_DROP_DB:
                problems.append(f"{name} audio SNR {snr:.1f} dB, was {old_snr:.1f} dB")
        return problems

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"precision": self.precision, "passed": self.passed, "problems": list(self.problems)}
        if self.error is not None:
            data["error"] = self.error
        else:
            data["submodels"] = {k: f.to_dict() for k, f in self.submodels.items()}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fidelity:
        return cls(
            precision=data["precision"],
            passed=data.get("passed"),
            problems=list(data.get("problems", [])),
            submodels={k: SubmodelFigures(**v) for k, v in data.get("submodels", {}).items()},
            error=data.get("error"),
        )
