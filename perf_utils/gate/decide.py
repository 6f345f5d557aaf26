"""The gate's decision: find the baseline for this run, refuse an incomparable one, compare, decide the exit
status. Kept apart from pytest so the two-stack comparison and the CLI decide exactly as `pytest benchmarks` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from perf_utils.gate import hostspeed
from perf_utils.gate.compare import Comparison, compare, paired_session
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record import store
from perf_utils.record.record import RunRecord
from perf_utils.record.store import BaselineError

EXIT_OK = 0
EXIT_REGRESSION = 1  # same as a failed test and as pytest-benchmark's --benchmark-compare-fail
EXIT_BAD_BASELINE = 10
EXIT_INCOMPARABLE = 11
EXIT_BAD_THRESHOLDS = 4  # pytest's usage error: the thresholds in pyproject.toml cannot be used

# Why a run finished without the gate, and how to ask for it: said on screen and in the report.
NOT_ASKED = "gate not run: add `--benchmark-compare` (or `--bark-compare`) to compare with the stored baseline"


# Why a gate that compared nothing failed, by its status: said in one line after the messages that explain it.
NOT_COMPARED = {
    "bad-baseline": "the baseline file cannot be used",
    "incomparable": "the baseline must not be compared with this run",
    "bad-thresholds": "the thresholds cannot be used",
}


@dataclass
class GateOutcome:
    status: str  # "compared" | "no-baseline" | "incomparable" | "bad-baseline" | "bad-thresholds"
    exit_code: int
    baseline_path: Path | str | None = None  # the file compared with (or what the baseline record was)
    comparison: Comparison | None = None
    messages: list[str] = field(default_factory=list)
    baseline: RunRecord | None = None  # the compared baseline, raw rounds and all (for the report's figures)
    per_host_probe: bool = False  # time was judged per host probe (`hostspeed`): the figures draw it so too
    # Both records as compared, in seconds at the baseline's host speed where judged per host probe, so the report
    # draws what was judged without working it out again.
    judged: tuple[RunRecord, RunRecord] | None = None


@dataclass(frozen=True)
class GateOptions:
    baselines_dir: Path
    thresholds: Thresholds = field(default_factory=Thresholds)
    baseline_file: Path | None = None  # explicit; otherwise found by hardware and checkpoint
    force: bool = False
    allow_lost: frozenset[str] = frozenset()
    fail_on_noisy: bool = False
    # Judge time in units of the host's speed (`gate.hostspeed`); None: as the thresholds say for the device kind.
    per_host_probe: bool | None = None


def adopt_hint(path: Path) -> str:
    return f"to adopt this run as the baseline, rerun with --bark-save-baseline (writes {path})"


def run_gate(current: RunRecord, opts: GateOptions) -> GateOutcome:
    found = stored_baseline(current, opts)
    if isinstance(found, GateOutcome):
        return found
    baseline, path = found
    return judge(baseline, current, opts, path)


def stored_baseline(current: RunRecord, opts: GateOptions) -> tuple[RunRecord, Path] | GateOutcome:
    """The stored baseline `current` is judged against, read and checked, with its file; or the outcome that says
    why there is none to judge (none yet, exit 0; a missing or broken file, exit 10). `current` needs only its
    header (hardware, checkpoint), so this is also asked before anything is measured."""
    expected = store.baseline_for(opts.baselines_dir, current)
    path = opts.baseline_file or expected
    if not path.exists():
        if opts.baseline_file is not None:
            return GateOutcome("bad-baseline", EXIT_BAD_BASELINE, path, messages=[f"{path}: no such baseline file"])
        msgs = [f"no baseline for hardware {current.hardware!r} and checkpoint {current.checkpoint['key']!r}"]
        others = store.other_hardware(opts.baselines_dir, current.hardware, current.checkpoint["key"])
        if others:
            msgs.append(
                "baselines from other hardware exist and were NOT compared: "
                + ", ".join(str(p) for p in others)
                + " (compare anyway with --bark-baseline FILE --bark-force-compare)"
            )
        msgs.append(adopt_hint(expected))
        return GateOutcome("no-baseline", EXIT_OK, None, messages=msgs)
    try:
        return store.load(path), path
    except BaselineError as exc:
        return GateOutcome("bad-baseline", EXIT_BAD_BASELINE, path, messages=[str(exc), "nothing was overwritten"])


def refusal(
    baseline: RunRecord, current: RunRecord, opts: GateOptions, source: Path | str, notes: Sequence[str] = ()
) -> GateOutcome | None:
    """The outcome that refuses to compare two runs of other hardware, checkpoint or workload (exit 11); None when
    they may be compared, or `--bark-force-compare` says compare anyway. Needs only `current`'s header."""
    problems = store.incompatibilities(baseline, current)
    if not problems or opts.force:
        return None
    messages = [*notes, f"refusing to compare with {source}:", *problems, "(override with --bark-force-compare)"]
    return GateOutcome("incomparable", EXIT_INCOMPARABLE, source, messages=messages)


def before_measuring(header: RunRecord, opts: GateOptions) -> GateOutcome | None:
    """What would stop the gate, found before the run instead of after it (on a GPU, half an hour later): a
    baseline file that is missing or broken, or one that must not be compared with this run. `header`: the run's
    record before it measured anything. None when the gate can judge the run (or there is no baseline yet)."""
    found = stored_baseline(header, opts)
    if isinstance(found, GateOutcome):
        return found if found.exit_code != EXIT_OK else None
    baseline, path = found
    return refusal(baseline, header, opts, path)


ENOUGH_INVOCATIONS = 3  # fewer a side, and an interval misses how far processes differ (`few_invocations`)


def invocations_per_benchmark(record: RunRecord) -> int | None:
    """The fewest invocations any measured benchmark of `record` was measured in (the groups its latency interval
    is built from); None when none was measured."""
    return min((len(r.groups("latency_s")) for r in record.results if r.ran and r.rounds), default=None)


def few_invocations(baseline: RunRecord, current: RunRecord) -> list[str]:
    """A side measured in 1 or 2 invocations: its interval cannot see how far processes differ, and is too narrow.
    Simulated (docs/gate-quality.md, "One or two invocations"): two unchanged sides of 1 invocation x 2-4 rounds
    were told apart in 48-71% of comparisons, of 2 x 2 in 17%, of 3 x 2 in 4.5%, against the 2% an interval at the
    gate's 98% should. Said, so that a change called from them is not taken for Bark's."""
    counts = [(who, invocations_per_benchmark(r)) for who, r in (("the baseline", baseline), ("this run", current))]
    few = [f"{who} in {n}" for who, n in counts if n is not None and n < ENOUGH_INVOCATIONS]
    if not few:
        return []
    return [
        f"note: measured in few invocations per benchmark ({', '.join(few)}): an interval over fewer than "
        f"{ENOUGH_INVOCATIONS} cannot see how far processes differ and is too narrow, so a change it calls may be the "
        f"processes' (unchanged code measured in 1 invocation a side is told apart about half the time): take "
        f"{ENOUGH_INVOCATIONS} or more (--bark-invocations)"
    ]


def judge(baseline: RunRecord, current: RunRecord, opts: GateOptions, source: Path | str) -> GateOutcome:
    """Compare `current` with a baseline record already in hand (read from `source`: a file, or a description
    such as the pinned stack), refusing an incomparable one unless forced."""
    messages = [baseline.migrated] if baseline.migrated else []
    messages += store.schedule_notes(baseline, current) + store.setting_notes(baseline, current)
    messages += store.memory_notes(baseline, current)
    messages += few_invocations(baseline, current)
    if isinstance(source, Path):  # a stored baseline (the other side of a pair is described in words)
        messages += store.stack_notes(baseline, current)
    if refused := refusal(baseline, current, opts, source, messages):
        return refused
    if problems := store.incompatibilities(baseline, current):
        messages += [f"comparing with {source} although (forced):", *problems]
    stored = baseline  # as measured, for the report's figures
    per_probe = opts.thresholds.per_host_probe(opts.per_host_probe)
    paired = paired_session(baseline, current) is not None
    if per_probe and paired:
        per_probe = False  # each trial's ratio already cancels the host's speed
        if opts.per_host_probe:
            messages.append("note: time judged on the paired trials' ratios, not per host probe: they cancel it")
    if per_probe:
        both = hostspeed.at_baseline_speed(baseline, current)
        if isinstance(both, str):
            messages.append(f"note: time judged as measured, not per host probe: {both}; retake it to judge so")
        else:
            change = hostspeed.probe_change(baseline, current)
            band = opts.thresholds.host_probe_band
            beyond = (
                f"; beyond {band:.0%} the probe stops tracking Bark: where a benchmark's probe moved that far, only a "
                f"time change larger than {opts.thresholds.host_probe_slack:g} x the probe's on top of the threshold "
                "is called, a smaller one is noisy"
                if change is not None and opts.thresholds.beyond_probe_band(change)
                else ""
            )
            messages.append(
                f"latency and throughput judged per host probe (this run's probe {change:+.1%} against the baseline's "
                "over all its benchmarks): each round divided by its invocation's median probe over every benchmark, "
                "in seconds at the baseline's host speed" + beyond
            )
            baseline, current = both
    comparison = compare(baseline, current, opts.thresholds, set(opts.allow_lost), opts.fail_on_noisy, per_probe)
    if not per_probe and not paired:  # a paired session's two sides ran on one host, trial by trial
        messages += hostspeed.notes(baseline, current, comparison.verdicts)
    return GateOutcome(
        "compared",
        EXIT_REGRESSION if comparison.failed else EXIT_OK,
        source,
        comparison,
        messages=messages,
        baseline=stored,
        per_host_probe=per_probe,
        judged=(baseline, current),
    )
