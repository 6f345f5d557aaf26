"""How good is the gate on this machine? False alarms on unchanged code, and the smallest slowdown caught.

A gate is only as good as its measured false-alarm rate (CodSpeed: a 2% gate on a 2.7%-CV runner alarms
45% of the time). This repeats unchanged runs of one configuration against a reference run, then runs with
injected slowdowns and extra memory of several sizes, and reports how often the gate calls each.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tabulate import tabulate

from perf_utils.bark import configs
from perf_utils.gate import hostspeed, sessions
from perf_utils.gate.compare import IMPROVED, NOISY, REGRESSED, BenchmarkVerdict, compare_result, unlike_processes
from perf_utils.gate.decide import GateOptions, GateOutcome, judge
from perf_utils.gate.remeasure import remeasure_noisy
from perf_utils.gate.thresholds import Thresholds
from perf_utils.measure import faults
from perf_utils.measure.run import Case, Run, RunPlan
from perf_utils.record import store
from perf_utils.record.atomic import write_json
from perf_utils.record.metrics import memory_metric
from perf_utils.record.record import FRESH, IN_PROCESS, BenchmarkResult, RunRecord, Schedule, benchmark_id
from perf_utils.record.stats import summarize


@dataclass
class QualityRow:
    label: str
    batch_size: int
    flagged: int = 0
    trials: int = 0
    changes: list[float] = field(default_factory=list)
    noisy: int = 0  # trials the gate called too noisy to decide (neither a pass nor an alarm)
    added: list[int] = field(default_factory=list)  # invocations re-measuring added, per run (--remeasure-noisy)

    @property
    def rate(self) -> float:
        return self.flagged / self.trials if self.trials else float("nan")


@dataclass
class Scenario:
    """Runs of one scenario and the reference run they are judged against (judged later, at any thresholds)."""

    label: str
    batch_size: int
    metric: str  # "any": a call either way is a false alarm; else a hit is this metric regressing
    reference: BenchmarkResult
    runs: list[BenchmarkResult] = field(default_factory=list)
    # Paired scenarios (compare-stacks' alternating trials): each run's own pinned side, judged paired.
    references: list[BenchmarkResult] = field(default_factory=list)
    added: list[int] = field(default_factory=list)  # invocations re-measuring added to each run
    # Where the reference and the runs were measured, when unlike (`gate.compare.unlike_processes`): a stored
    # baseline's worker processes against runs in the calling process. Their RSS rises (and, in a record without host
    # allocations, the peaks / fp32 taken from them) are then not judged.
    unlike: str | None = None

    def judged_pairs(self) -> list[tuple[BenchmarkResult, BenchmarkResult]]:
        return list(zip(self.references or [self.reference] * len(self.runs), self.runs, strict=True))

    def to_dict(self) -> dict[str, Any]:
        results = {"reference": self.reference.to_dict(), "runs": [r.to_dict() for r in self.runs],
                   "references": [r.to_dict() for r in self.references]}  # fmt: skip
        return {"label": self.label, "batch_size": self.batch_size, "metric": self.metric, "added": self.added,
                "unlike": self.unlike, **results}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        res = BenchmarkResult.from_dict
        runs, refs = [res(r) for r in data["runs"]], [res(r) for r in data["references"]]
        return cls(data["label"], data["batch_size"], data["metric"], res(data["reference"]), runs, refs,
                   list(data["added"]), data.get("unlike"))  # fmt: skip


@dataclass
class QualityRuns:
    """Every run gate-quality measured, raw rounds and all, to judge again later (`--from`) at other settings;
    `device_type` picks the thresholds they are judged at, as it did when they were measured."""

    header: str
    device_type: str
    scenarios: list[Scenario]

    def save(self, path: Path) -> None:
        data = {"header": self.header, "device_type": self.device_type,
                "scenarios": [sc.to_dict() for sc in self.scenarios]}  # fmt: skip
        write_json(path, data)

    @classmethod
    def load(cls, path: Path) -> QualityRuns:
        """`path` as `--json` wrote it, or gzipped (`.gz`: how docs/ keeps them)."""
        try:
            raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            data = json.loads(raw.decode("utf-8"))
            return cls(data["header"], data["device_type"], [Scenario.from_dict(sc) for sc in data["scenarios"]])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}: not a gate-quality file written by --json ({exc!r})") from None


def _measured(run: Run, case: Case, alongside: Iterable[Case] = ()) -> BenchmarkResult:
    """One run of `case` as a user's run would measure it (in `plan.invocations` invocations), interleaved with
    the cases `alongside` when a run of them is what the gate sees (a lane of several configurations)."""
    result = run.measure_all([case, *alongside]).by_id()[case.id]
    if result.error is not None:
        raise result.error
    return result


@dataclass(frozen=True)
class Remeasure:
    """Judge each run against the reference at `thresholds` and re-measure it while noisy, within `budget_s`,
    as `--bark-remeasure-noisy` does after a run."""

    budget_s: float
    thresholds: Thresholds


def _remeasured(
    run: Run, case: Case, reference: BenchmarkResult, in_caller: bool, how: Remeasure
) -> tuple[BenchmarkResult, int]:
    """The run just measured, after `gate.remeasure` on it; and how many invocations that added. `in_caller`:
    whether the reference was measured in the calling process, so the gate sees where each side was."""
    base = run.record.copy()
    base.results = [reference]
    base.schedule = replace(base.schedule or Schedule(), workers=IN_PROCESS if in_caller else FRESH)
    opts = GateOptions(Path("reference"), how.thresholds)

    def gate(record: RunRecord) -> GateOutcome:
        now = record.copy()
        now.results = [record.by_id()[case.id]]
        return judge(base, now, opts, "the reference run")

    done = remeasure_noisy(run.record, gate(run.record), gate, run.measure_more, how.budget_s)
    return done.record.by_id()[case.id], done.invocations


def measure_quality(
    plan: RunPlan,
    config_name: str = "fp32",
    batch_sizes: Iterable[int] = (1,),
    repeats: int = 10,
    trials: int = 3,
    slowdowns: Iterable[float] = (0.05, 0.1, 0.2, 0.3, 0.5),
    buffers_mb: Iterable[int] = (2, 8, 32),
    progress: Callable[[str], None] | None = None,
    remeasure: Remeasure | None = None,
    reference_invocations: int | None = None,
    baselines_dir: Path | None = None,
    alongside: Iterable[str] = (),
) -> list[Scenario]:
    """Through the run loop, like any run (each run in `plan.invocations` worker processes); a fault is a
    configuration of its own. The memory scenarios read the peak where the buffer lives: the allocator's on an
    accelerator. With `remeasure`, each run is re-measured while noisy, as a user's run would be. The reference
    stands for the stored baseline, taken in `reference_invocations` (default: as many as a run); with
    `baselines_dir` it is the stored baseline itself, taken in another session (`reference_baseline`). The
    configurations `alongside` are measured unchanged in every run, interleaved, as in a run of all of them: what
    else an invocation holds and runs changes the judged configuration's RSS rise and its speed."""
    config = configs.get(config_name)
    run = Run(plan, check_fidelity=False)
    out: list[Scenario] = []
    try:
        with keeping(lambda: out):
            for bs in batch_sizes:
                case, others = Case(config, bs), [Case(configs.get(name), bs) for name in alongside]
                if baselines_dir is not None:
                    baseline = reference_baseline(baselines_dir, run.record, case.id)
                    reference, ref_in_caller = baseline.by_id()[case.id], baseline.in_caller
                else:
                    reference = _reference(plan, reference_invocations, case, others) or _measured(run, case, others)
                    ref_in_caller = Schedule(invocations=reference_invocations or plan.invocations).in_caller
                in_caller = Schedule(invocations=plan.invocations).in_caller  # the runs'
                memory = memory_metric(set(reference.metrics()))
                plans: list[tuple[str, str, Any, int]] = [
                    ("unchanged (false alarms)", "any", config, repeats),
                    *(
                        (f"slowdown +{s:.0%}", "latency_s", faults.inject(config, f"slowdown:{s}"), trials)
                        for s in slowdowns
                    ),
                    *(
                        (f"extra buffer {mb} MB", memory, faults.inject(config, f"extra_buffer:{mb}"), trials)
                        for mb in buffers_mb
                    ),
                ]
                for label, metric, scenario_config, n in plans:
                    scenario = Scenario(label, bs, metric, reference, unlike=unlike_processes(ref_in_caller, in_caller))
                    with keeping(lambda: [scenario] if scenario.runs else []):  # noqa: B023 - read at once, if at all
                        for i in range(n):
                            if progress:
                                progress(f"bs{bs} {label}: run {i + 1}/{n}")
                            case = Case(scenario_config, bs)
                            result, added = _measured(run, case, others), 0
                            if remeasure is not None:
                                result, added = _remeasured(run, case, reference, ref_in_caller, remeasure)
                            scenario.runs.append(result)
                            scenario.added.append(added)
                    out.append(scenario)
    finally:
        run.release()
    return out


class QualityInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a time limit's SIGINT) in gate-quality: `scenarios` holds the runs it finished, to judge."""

    def __init__(self, scenarios: list[Scenario]) -> None:
        super().__init__()
        self.scenarios = scenarios


@contextlib.contextmanager
def keeping(finished: Callable[[], list[Scenario]]) -> Iterator[None]:
    """Ctrl-C in the block raises `QualityInterrupted` with `finished()`, what the block had finished by then,
    followed by what a `QualityInterrupted` from inside it holds; with nothing finished, the interrupt goes on as it
    is. The one rule by which every gate-quality mode keeps its finished runs and leaves out the one it cut."""
    try:
        yield
    except KeyboardInterrupt as stop:
        done = finished() + (stop.scenarios if isinstance(stop, QualityInterrupted) else [])
        if not done:
            raise
        raise QualityInterrupted(done) from None


def reference_baseline(baselines_dir: Path, record: RunRecord, benchmark: str) -> RunRecord:
    """The baseline `--benchmark-compare` would judge `record` against, holding `benchmark` measured: what a user's
    run meets, measured hours or days before, in another session (its offset from today's level is part of the
    gate's noise). None yet, a broken one, one the gate would refuse, or one without the benchmark is a ValueError
    naming the file."""
    path = store.baseline_for(baselines_dir, record)
    if not path.exists():
        raise ValueError(f"--reference-baseline: no baseline {path} for this machine ({record.hardware})")
    try:
        baseline = store.load(path)
    except store.BaselineError as exc:
        raise ValueError(f"--reference-baseline: {exc}") from None
    if problems := store.incompatibilities(baseline, record):
        raise ValueError(f"--reference-baseline: {path} cannot be compared: {'; '.join(problems)}")
    result = baseline.by_id().get(benchmark)
    if result is None or not result.ran:
        raise ValueError(f"--reference-baseline: {path} holds no measured {benchmark}")
    return baseline


def _reference(plan: RunPlan, invocations: int | None, case: Case, others: list[Case]) -> BenchmarkResult | None:
    """The reference taken in `invocations` worker processes, as `--bark-invocations N --bark-save-baseline`
    takes a baseline; None when that is as many as a run takes."""
    if invocations is None or invocations == plan.invocations:
        return None
    run = Run(replace(plan, invocations=invocations), check_fidelity=False)
    try:
        return _measured(run, case, others)
    finally:
        run.release()


def _as_first_measured(result: BenchmarkResult, added: int) -> BenchmarkResult:
    """`result` without the last `added` invocations (those re-measuring added)."""
    if not added or not result.invocations:
        return result
    dropped = set(sorted(set(result.invocations))[-added:])  # labels only grow: the added ones are the last
    return result.only([k for k, i in enumerate(result.invocations) if i not in dropped])


def judged(scenarios: list[Scenario], thresholds: Thresholds) -> list[QualityRow]:
    """How the gate at `thresholds` calls every run of every scenario; after each batch size's scenarios, the
    spread of its reference run."""
    rows: list[QualityRow] = []
    for i, sc in enumerate(scenarios):
        if any(sc.added):  # the same runs as first measured, for the comparison
            first = [
                (ref, _as_first_measured(run, n)) for (ref, run), n in zip(sc.judged_pairs(), sc.added, strict=True)
            ]
            rows.append(_row(f"{sc.label}, before re-measuring", sc, first, thresholds))
        row = _row(sc.label, sc, sc.judged_pairs(), thresholds)
        row.added = list(sc.added)
        rows.append(row)
        if (adjusted := _host_speed_row(sc, thresholds)) is not None:
            rows.append(adjusted)
        last_of_size = i + 1 == len(scenarios) or scenarios[i + 1].batch_size != sc.batch_size
        if last_of_size:
            groups = sc.reference.groups("latency_s")
            cv = summarize(sc.reference.values("latency_s")).cv
            inv = f", {len(groups)} invocations" if len(groups) > 1 else ""
            rows.append(QualityRow(f"(latency CV of the reference rounds: {cv:.1%}{inv})", sc.batch_size))
            if sc.unlike:
                not_judged = f"(RSS rises, and peaks / fp32 of them, not judged: {sc.unlike})"
                rows.append(QualityRow(not_judged, sc.batch_size))
            if (drift := _sessions_row(sc, thresholds)) is not None:
                rows.append(drift)
    return rows


def _sessions_row(sc: Scenario, thresholds: Thresholds) -> QualityRow | None:
    """What the gate measured of the machine's drift when the reference is a baseline of several sessions
    (`gate.sessions`): it replaces pyproject's drift in these judgements."""
    per_probe = hostspeed.adjusted(sc.reference) if thresholds.time_per_host_probe else None
    drift = sessions.measured(per_probe or sc.reference, thresholds)
    if drift is None:
        return None
    how = " per host probe" if per_probe else ""
    return QualityRow(
        f"(the reference holds {drift.sessions} sessions: their levels{how} spread {drift.measured:.1%} beyond their "
        f"invocations; drift used {drift.used:.1%}, pyproject's {thresholds.drift:.0%})",
        sc.batch_size,
    )


def _host_speed_row(sc: Scenario, thresholds: Thresholds) -> QualityRow | None:
    """The same runs judged on latency in units of the host's speed (`gate.hostspeed`): the time scenarios only,
    where every run and its reference carry the probe."""
    if sc.metric not in ("any", "latency_s"):
        return None
    pairs = sc.judged_pairs()
    adjusted = [(ref, run) for ref, run in ((hostspeed.adjusted(a), hostspeed.adjusted(b)) for a, b in pairs)
                if ref is not None and run is not None]  # fmt: skip
    if not adjusted or len(adjusted) < len(pairs):
        return None
    # What the gate itself judges; never a paired session, which it judges on its trials' ratios (gate.decide).
    setting = " (the setting here)" if thresholds.time_per_host_probe and not sc.references else ""
    return _row(f"{sc.label}, latency / host probe{setting}", sc, adjusted, thresholds, per_probe=True)


def _row(
    label: str,
    sc: Scenario,
    pairs: list[tuple[BenchmarkResult, BenchmarkResult]],
    thresholds: Thresholds,
    per_probe: bool = False,
) -> QualityRow:
    """How the gate calls each (reference, run) pair of scenario `sc` (paired where `sc` is compare-stacks')."""
    row = QualityRow(label, sc.batch_size)
    for reference, result in pairs:
        verdict = compare_result(reference, result, thresholds, bool(sc.references), per_probe, sc.unlike)
        _count(row, verdict, sc.metric)
    return row


@contextlib.contextmanager
def busy_loops(n: int) -> Iterator[None]:
    """`n` processes spinning on a core each for as long as the block runs: a machine shared with other work."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def _count(row: QualityRow, verdict: BenchmarkVerdict, metric: str) -> None:
    """`metric` "any": a false alarm is any call either way; otherwise a hit is that metric regressing."""
    if metric == "any":
        hit = verdict.verdict in (REGRESSED, IMPROVED)
        change = verdict.metric("latency_s")
    else:
        change = verdict.metric(metric)
        hit = change is not None and change.verdict == REGRESSED
    row.flagged += hit
    row.noisy += verdict.verdict == NOISY
    row.trials += 1
    if change is not None:
        row.changes.append(change.change)


def cross_process(
    run_args: list[str], config_name: str, batch_sizes: Iterable[int], processes: int, workdir: Path,
    progress: Callable[[str], None] | None = None, alongside: Iterable[str] = (),
) -> list[Scenario]:  # fmt: skip
    """Unchanged code as a user sees it: `processes` separate `python -m perf_utils run` invocations, each judged
    against the first (the stored baseline) by the gate, `config_name` measured beside `alongside` as in
    `measure_quality`. Between-process variance is what the in-process scenarios cannot show. Interrupted, the
    processes that finished are judged (`QualityInterrupted`); the cut one is left out."""
    sizes = list(batch_sizes)
    records: list[dict[str, BenchmarkResult]] = []

    def scenarios() -> list[Scenario]:
        label = "unchanged, separate `run` processes (false alarms)"
        ids = [(bs, benchmark_id(config_name, bs)) for bs in sizes]
        return [Scenario(label, bs, "any", records[0][bid], [now[bid] for now in records[1:]]) for bs, bid in ids]

    with keeping(lambda: scenarios() if len(records) > 1 else []):  # the first alone is no run judged
        for i in range(processes + 1):
            if progress:
                progress(f"separate process {i + 1}/{processes + 1}")
            out = workdir / f"process-{i}.json"
            cmd = [sys.executable, "-m", "perf_utils", "run", "--configs", ",".join([config_name, *alongside]),
                   "--batch-sizes", ",".join(map(str, sizes)), "--no-fidelity", "--json", str(out),
                   "--results-dir", str(workdir / "results"), *run_args]  # fmt: skip
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(
                    f"{' '.join(cmd)} failed (exit {done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
                )
            records.append(RunRecord.from_dict(json.loads(out.read_text())).by_id())
    return scenarios()


def alternating(
    plan: RunPlan,
    config_name: str,
    batch_sizes: Iterable[int],
    sessions: int,
    trials: int,
    slowdowns: Iterable[float],
    progress: Callable[[str], None] | None = None,
) -> list[Scenario]:
    """compare-stacks as it runs (`measure.alternate`: two serving workers per invocation, alternating trials)
    with this stack on both sides: `sessions` unchanged sessions (paired A/A), then `trials` sessions per
    slowdown injected into the candidate side only; each judged paired, against its own pinned side. Interrupted,
    the sessions that finished are judged (`QualityInterrupted`); the cut one is left out."""
    from perf_utils.measure.alternate import Side, alternate
    from perf_utils.measure.run import cases

    config, sizes = configs.get(config_name), list(batch_sizes)
    plans = [("same stack on both sides (false alarms)", "any", config, sessions),
             *((f"candidate +{s:.0%} slower", "latency_s", faults.inject(config, f"slowdown:{s}"), trials)
               for s in slowdowns)]  # fmt: skip
    out: list[Scenario] = []
    for label, metric, candidate, n in plans:
        sessions: dict[int, tuple[list[BenchmarkResult], list[BenchmarkResult]]] = {bs: ([], []) for bs in sizes}
        # a cut session (`SessionInterrupted`) took fewer trials than a session does: left out
        with keeping(lambda: out + _paired(label, metric, sessions)):  # noqa: B023 - read at once, if at all
            for i in range(n):
                if progress:
                    progress(f"compare-stacks, {label}: session {i + 1}/{n}")
                sides = [Side("pinned", sys.executable, cases([config], sizes)),
                         Side("candidate", sys.executable, cases([candidate], sizes))]  # fmt: skip
                records = alternate(plan, sides, check_fidelity=False)
                for bs, (pinned_sides, candidates) in sessions.items():
                    bid = benchmark_id(config_name, bs)
                    pinned, now = records["pinned"].by_id()[bid], records["candidate"].by_id()[bid]
                    for result in (pinned, now):
                        if not result.ran:
                            raise RuntimeError(f"{bid} did not run: {result.reason}")
                    pinned_sides.append(pinned)
                    candidates.append(now)
        out += _paired(label, metric, sessions)
    return out


def _paired(
    label: str, metric: str, sessions: dict[int, tuple[list[BenchmarkResult], list[BenchmarkResult]]]
) -> list[Scenario]:
    """A scenario per batch size of the sessions taken: (pinned sides, candidates) of each."""
    return [Scenario(f"compare-stacks: {label}", bs, metric, refs[0], runs, refs)
            for bs, (refs, runs) in sessions.items() if runs]  # fmt: skip


def quality_table(rows: list[QualityRow], thresholds: Thresholds) -> str:
    body = []
    for r in rows:
        if not r.trials:
            body.append([f"bs{r.batch_size}", r.label, "", "", "", ""])
            continue
        med = summarize(r.changes).median if r.changes else float("nan")
        flagged, rate, noisy = f"{r.flagged}/{r.trials}", f"{r.rate:.0%}", f"{r.noisy}/{r.trials}"
        body.append([f"bs{r.batch_size}", r.label, flagged, rate, noisy, f"{med:+.1%}"])
        if any(any(row.added) for row in rows):
            body[-1].append(f"{sum(a > 0 for a in r.added)} runs, +{sum(r.added)} invocations" if r.added else "")
    headers = ["batch", "scenario", "flagged", "rate", "noisy", "median measured change"]
    if any(any(r.added) for r in rows):
        headers.append("re-measured while noisy")
        body = [b + [""] * (len(headers) - len(b)) for b in body]
    table = tabulate(body, headers=headers, tablefmt="github")
    th = thresholds
    drift = (
        f", the machine's drift {th.drift:.0%} in time intervals (pyproject's; measured where the reference is a "
        "baseline of several sessions)"
        if th.drift
        else ""
    )
    return (
        table + f"\n\nthresholds: time {th.time:.0%}, throughput {th.throughput:.0%}, memory {th.memory:.0%} "
        f"and {th.memory_floor_mb:g} MB, paired (compare-stacks) time and throughput {th.paired:.0%}, each end of "
        f"the bootstrap interval {th.alpha}{drift}"
    )
