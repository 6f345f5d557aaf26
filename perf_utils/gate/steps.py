"""An upgrade judged package by package: which of the packages it changes made each change it brings.

`compare-stacks --by-package` measures a chain of stacks in one session of alternating trials: the pinned stack,
then one package changed to the candidate's version at each step, up to the candidate. Each stack is judged
against the one before it, paired as the two ends are (`compare`), so a step's verdict is the change its
package(s) made with the others held; its fp32 eager numbers are held to the stack's before it by the golden
fingerprint's figures, so a stack that changes what Bark computes is traced to its package too. A change of the
whole upgrade is said to have come with the steps that call the same; where none does, it is the sum of steps each
too small to call alone. torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass

from perf_utils.gate.compare import (
    IMPROVED,
    LOST,
    NEW,
    REGRESSED,
    BenchmarkVerdict,
    Comparison,
    MetricChange,
    compare,
)
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record.golden import differences
from perf_utils.record.record import RunRecord

CALLED = (REGRESSED, IMPROVED)
WHOLE = (LOST, NEW)  # a benchmark's verdict that is not a metric's: the configuration went or came


@dataclass(frozen=True)
class StepVerdict:
    """One package's change (or several, where they could not be installed apart) and its verdict: this stack
    against the one before it in the chain."""

    label: str
    comparison: Comparison
    # How fp32 eager's numbers moved at this step (`record.golden.differences` of the two stacks' references):
    # empty when they did not, None when either stack computed no reference (the fidelity check off).
    numerics: list[str] | None = None

    def verdict(self, benchmark: str) -> BenchmarkVerdict | None:
        return next((v for v in self.comparison.verdicts if v.id == benchmark), None)


@dataclass(frozen=True)
class Attribution:
    """One change of the whole upgrade (a metric of a benchmark, or the benchmark lost or new: `metric` None) and
    the steps that called the same; `shares`: each step's own change of that metric (None where it has none), in
    chain order."""

    benchmark: str
    verdict: str
    metric: MetricChange | None
    came_with: list[str]
    shares: list[tuple[str, MetricChange | None]]
    reason: str | None = None  # lost or new: why the step that made it could not run it (or could)


def judge_steps(chain: list[RunRecord], labels: list[str], thresholds: Thresholds) -> list[StepVerdict]:
    """Each record of `chain` (pinned first, candidate last, all of one session) against the one before it;
    `labels[i]` names what changed from `chain[i]` to `chain[i + 1]`."""
    if len(labels) != len(chain) - 1:
        raise ValueError(f"{len(chain)} stacks make {len(chain) - 1} steps; got {len(labels)} labels")
    return [
        StepVerdict(label, compare(a, b, thresholds), _numerics(a, b))
        for label, a, b in zip(labels, chain, chain[1:], strict=False)
    ]


def _numerics(before: RunRecord, after: RunRecord) -> list[str] | None:
    if before.reference is None or after.reference is None:
        return None
    return differences(before.reference, after.reference)


def attribute(total: Comparison, steps: list[StepVerdict]) -> list[Attribution]:
    """For each change the whole upgrade calls (regressed or improved metrics, lost or new benchmarks), the steps
    that called the same."""
    out = []
    for v in total.verdicts:
        if v.verdict in WHOLE:
            made = [(s.label, sv) for s in steps if (sv := s.verdict(v.id)) is not None and sv.verdict == v.verdict]
            reason = made[0][1].reason if made else None
            out.append(Attribution(v.id, v.verdict, None, [label for label, _ in made], [], reason))
            continue
        for m in v.called(*CALLED):
            shares = [(s.label, _metric(s.verdict(v.id), m.metric)) for s in steps]
            came = [label for label, share in shares if share is not None and share.verdict == m.verdict]
            out.append(Attribution(v.id, m.verdict, m, came, shares))
    return out


def called_in_steps_only(
    total: Comparison, steps: list[StepVerdict]
) -> list[tuple[str, list[tuple[str, MetricChange]]]]:
    """Benchmarks the whole upgrade leaves unchanged (or noisy) while a step called a change: packages whose
    changes cancel (one 5% slower, the next 5% faster), which the two ends alone hide."""
    out = []
    for v in total.verdicts:
        if v.verdict in (*CALLED, *WHOLE):
            continue
        moved = [(s.label, m) for s in steps if (sv := s.verdict(v.id)) is not None for m in sv.called(*CALLED)]
        if moved:
            out.append((v.id, moved))
    return out


def _metric(v: BenchmarkVerdict | None, metric: str) -> MetricChange | None:
    return v.metric(metric) if v is not None else None
