"""An upgrade one package at a time (`compare-stacks --by-package`): the chain of stacks from the pinned one to the
candidate, each changing one more package to the candidate's version, measured in one session.

An upgrade gate that fails on "transformers, optimum and accelerate changed" leaves the first question open: which
of them? Each step of the chain holds the others, and all its stacks alternate trial by trial, so each step is
judged paired against the one before it (`gate.steps`). A step whose stack pip cannot install (a package that
requires the next one's new version) is changed together with the next package, and said so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from perf_utils.options import RunOptions
from perf_utils.record.record import STACK_PACKAGES, RunRecord
from perf_utils.tools.upgrade import StackError, StackSpec, ensure_venv, run_chain


@dataclass(frozen=True)
class Change:
    """One package's move from the pinned stack to the candidate; either side may leave it unpinned (None: pip
    picks what the other requirements allow)."""

    package: str
    before: str | None  # the requirement as the pinned stack gives it
    after: str | None

    @property
    def label(self) -> str:
        """`transformers 4.48.3 -> 5.24.0`; a requirement that is not one version is shown whole."""
        return f"{self.package} {_shown(self.before)} -> {_shown(self.after)}"


@dataclass(frozen=True)
class Chain:
    """The records of the stacks measured (pinned first, candidate last) and what each step changed."""

    records: list[RunRecord]
    labels: list[str]  # labels[i]: what changed from records[i] to records[i + 1]
    folder: Path  # the candidate's kept run (its report goes there)


def _shown(requirement: str | None) -> str:
    if requirement is None:
        return "(unpinned)"
    req = Requirement(requirement)
    pins = [s.version for s in req.specifier if s.operator == "=="]
    return pins[0] if len(pins) == 1 and len(req.specifier) == 1 else str(req.specifier) or "(any)"


def _parse(requirement: str, where: str) -> Requirement:
    try:
        return Requirement(requirement)
    except InvalidRequirement as exc:
        raise StackError(f"{where}: {requirement!r} is not a requirement pip reads: {exc}") from None


def requirements_by_package(spec: StackSpec, torch_requirement: str) -> dict[str, str]:
    """Each package the stack pins, by canonical name, torch included (its own, or `torch_requirement`)."""
    out = {canonicalize_name(_parse(r, f"--{spec.name}").name): r for r in spec.requirements}
    out.setdefault("torch", spec.torch_requirement(torch_requirement))
    return out


def of_environment(name: str, packages: list[str]) -> StackSpec:
    """The running environment (`current`, at either end) as pins of `packages` (those installed), so the stacks
    between it and the other end can be built. torch without its local label (`2.13.0+cpu` is pinned as
    `torch==2.13.0`, as a record's is)."""
    pins = {}
    for package in packages:
        try:
            pins[package] = metadata.version(package).split("+")[0]
        except metadata.PackageNotFoundError:
            continue
    torch = pins.pop("torch", None)
    reqs = tuple(f"{p}=={v}" for p, v in pins.items())
    return StackSpec(name, reqs, torch=f"torch=={torch}" if torch else None, source="this environment")


def _same(before: str | None, after: str | None) -> bool:
    """The two requirements ask for the same version: equal after dropping local labels (`+cpu`), or a pin the
    other's range admits (a range in the pinned stack cannot be told apart from the version it contains)."""
    if before is None or after is None:
        return before is after
    a, b = Requirement(before), Requirement(after)
    pins = [next(iter(r.specifier)).version.split("+")[0] for r in (a, b) if _is_pin(r)]
    if len(pins) == 2:
        return pins[0] == pins[1]
    if len(pins) == 1:
        ranged = b if _is_pin(a) else a
        return ranged.specifier.contains(pins[0], prereleases=True)
    return a.specifier == b.specifier


def _is_pin(req: Requirement) -> bool:
    return len(req.specifier) == 1 and next(iter(req.specifier)).operator in ("==", "===")


def changes(pinned: dict[str, str], candidate: dict[str, str], order: list[str] | None = None) -> list[Change]:
    """What differs, one package each: in `order` first, then torch, transformers, optimum, accelerate (the stack
    the records name), then the rest as the candidate lists them. A name in `order` that does not change is an
    error naming it."""
    moved = {
        p: Change(p, pinned.get(p), candidate.get(p))
        for p in [*candidate, *(p for p in pinned if p not in candidate)]
        if not _same(pinned.get(p), candidate.get(p))
    }
    order = [canonicalize_name(p) for p in order or []]
    if unknown := [p for p in order if p not in moved]:
        raise StackError(
            f"--by-package {','.join(unknown)}: not changed from the pinned stack to the candidate; the packages "
            f"that change: {', '.join(moved) or 'none'}"
        )
    first = [*order, *(p for p in STACK_PACKAGES if p not in order)]
    return [moved[p] for p in first if p in moved] + [c for p, c in moved.items() if p not in first]


def step_stack(pinned: StackSpec, base: dict[str, str], done: list[Change], name: str) -> StackSpec:
    """The pinned stack with the changes in `done` made (`base`: its requirements by package, torch included)."""
    reqs = dict(base)
    for change in done:
        if change.after is None:
            reqs.pop(change.package, None)
        else:
            reqs[change.package] = change.after
    torch = reqs.pop("torch", None)
    return replace(pinned, name=name, requirements=tuple(reqs.values()), torch=torch, current=False, source=None)


def pinned_ends(pinned: StackSpec, candidate: StackSpec) -> tuple[StackSpec, StackSpec]:
    """The two stacks as requirements: an end that is this environment (`current`) pins what it has installed of
    the stack's packages and of every package the other end names."""
    names = [_parse(r, f"--{s.name}").name for s in (pinned, candidate) if not s.current for r in s.requirements]
    packages = list(dict.fromkeys([*STACK_PACKAGES, *(canonicalize_name(n) for n in names)]))
    a, b = (of_environment(s.name, packages) if s.current else s for s in (pinned, candidate))
    return a, b


@dataclass(frozen=True)
class Step:
    """The packages one step of the chain changes; `via`: asked for as a stack between (`--via`), named with its
    versions (a later step may change the same package again)."""

    changes: list[Change]
    via: bool = False

    @property
    def name(self) -> str:
        return "+" + "+".join(c.package + (f"-{_safe(_shown(c.after))}" if self.via else "") for c in self.changes)

    @property
    def label(self) -> str:
        return ", ".join(c.label for c in self.changes)


def _safe(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in text)


def plan(
    before: dict[str, str], after: dict[str, str], vias: list[list[str]], order: list[str] | None, split: bool
) -> list[Step]:
    """The steps from `before` to `after` (requirements by package): each `--via` in turn (the packages it pins
    changed to those versions), then what is left, one package per step where `split` (`--by-package`), else in
    one step. A `--via` that changes nothing is an error naming it; so is a chain of no step."""
    steps, now = [], dict(before)
    for via in vias:
        moved = []
        for requirement in via:
            package = canonicalize_name(_parse(requirement, "--via").name)
            if not _same(now.get(package), requirement):
                moved.append(Change(package, now.get(package), requirement))
                now[package] = requirement
        if not moved:
            raise StackError(f"--via {' '.join(via)}: the stack before it already pins that; nothing would change")
        steps.append(Step(moved, via=True))
    rest = changes(now, after, order)
    steps += [Step([c]) for c in rest] if split else ([Step(rest)] if rest else [])
    if not steps:
        raise StackError(
            "--by-package: the pinned stack and the candidate pin the same versions, so no package made a change "
            "between them (what else differs: the machine, its driver, this suite)"
        )
    return steps


def build(
    pinned: StackSpec,
    candidate: StackSpec,
    order: list[str] | None,
    root: Path,
    torch_requirement: str,
    progress: Callable[[str], None],
    vias: list[list[str]] | None = None,
    split: bool = True,
) -> tuple[list[StackSpec], list[Path], list[str]]:
    """The chain's stacks (`plan`), each built (cached like any stack), their Pythons, and each step's label. A
    step pip cannot install is joined to the next (said on `progress`); the last step ends at the candidate as given
    (`current` stays this environment)."""
    before, after = (requirements_by_package(s, torch_requirement) for s in pinned_ends(pinned, candidate))
    steps = plan(before, after, vias or [], order, split)
    specs, pythons, labels = [pinned], [ensure_venv(pinned, root, torch_requirement, progress)], []
    done: list[Change] = []
    pending: Step | None = None
    for i, step in enumerate(steps):
        done += step.changes
        pending = step if pending is None else Step(pending.changes + step.changes, pending.via or step.via)
        last = i == len(steps) - 1
        spec = candidate if last else step_stack(pinned, before, done, pending.name)
        try:
            python = ensure_venv(spec, root, torch_requirement, progress)
        except StackError as exc:
            if last:
                raise
            why = str(exc).strip().splitlines()[-1][:300]
            progress(f"[{spec.name}] cannot be installed before {steps[i + 1].label} too ({why}); "
                     f"changing them in one step")  # fmt: skip
            continue
        specs.append(spec)
        pythons.append(python)
        labels.append(pending.label)
        pending = None
    return specs, pythons, labels


def run(
    pinned: StackSpec,
    candidate: StackSpec,
    order: list[str] | None,
    root: Path,
    out_dir: Path,
    o: RunOptions,
    torch_requirement: str,
    progress: Callable[[str], None] = print,
    keep_runs: int | None = None,
    vias: list[list[str]] | None = None,
    split: bool = True,
) -> Chain:
    """Build the chain and measure all of it in one session (`upgrade.run_chain`)."""
    specs, pythons, labels = build(pinned, candidate, order, root, torch_requirement, progress, vias, split)
    said = (f"[{spec.name}] {label}" for spec, label in zip(specs[1:], labels, strict=True))
    progress("the upgrade step by step: " + "; ".join(said))
    records, folder = run_chain(specs, pythons, out_dir, o, progress, keep_runs)
    return Chain(records, labels, folder)
