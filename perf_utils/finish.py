"""The one end-of-run path, for a run just measured (pytest, `python -m perf_utils run`), a saved or merged run
(`gate`) and a two-stack comparison (`compare-stacks`): keep the run, gate it, adopt it as the baseline if asked,
write its report, say what happened, and decide the exit status.

It only reads and writes records, so it imports no torch: the nightly's verdict job needs none.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from perf_utils.gate.decide import (
    EXIT_BAD_BASELINE,
    EXIT_BAD_THRESHOLDS,
    EXIT_INCOMPARABLE,
    EXIT_OK,
    EXIT_REGRESSION,
    NOT_ASKED,
    NOT_COMPARED,
    GateOptions,
    GateOutcome,
    before_measuring,
    judge,
    run_gate,
)
from perf_utils.gate.remeasure import noisy_ids, remeasure_noisy, what_decides
from perf_utils.gate.thresholds import Thresholds, ThresholdsError
from perf_utils.options import FinishChoices
from perf_utils.record import golden, store
from perf_utils.record.record import RUN_FILE, RunRecord
from perf_utils.report import markdown
from perf_utils.report.markdown import WrittenReport
from perf_utils.report.table import (
    markdown_section,
    not_measured_lines,
    paired_lines,
    rule_line,
    summary_line,
    verdict_table,
)


@dataclass(frozen=True)
class Line:
    text: str
    red: bool = False
    bold: bool = False


@dataclass
class Finish:
    """What to do with one finished run; the entry point fills in its defaults (where runs are kept, ...)."""

    choices: FinishChoices
    baselines_dir: Path
    pyproject: Path
    golden_dir: Path | None = None  # golden fingerprints; None: not checked
    results_dir: Path | None = None  # keep the run here (its folder is also its report's); None: not kept
    report_dir: Path | None = None  # write the report here; default: the kept run's folder
    against: RunRecord | None = None  # compare with this record (the pinned stack) instead of a baseline file
    against_label: str = ""
    run_failed: str | None = None  # why the run itself failed (a failed benchmark): no baseline is adopted then
    header: list[str] = field(default_factory=list)  # lines to print before the verdict
    # One more invocation of the run, appended to it, for these noisy benchmarks (`Run.measure_more`): what
    # `--bark-remeasure-noisy` spends its budget on. None: the run cannot be measured again (a saved run).
    measure_more: Callable[[list[str]], RunRecord] | None = None


@dataclass
class Finished:
    exit_code: int
    lines: list[Line]
    outcome: GateOutcome | None = None
    kept: Path | None = None
    report: WrittenReport | None = None

    @property
    def headline(self) -> list[Line]:
        """The lines in bold: the verdict, an interrupt, changed numerics, the report's path; what one who reads
        nothing else needs, said again after other output (pytest-benchmark's table)."""
        return [line for line in self.lines if line.bold]


def finish(record: RunRecord, how: Finish) -> Finished:
    """Keep, gate, adopt, report, say, decide: in that order, each step's failure said and never fatal to the
    steps that do not depend on it. A stored baseline is only ever replaced whole, after a clean run. An
    interrupted run is kept and judged on what it measured, never re-measured or adopted."""
    notes: list[str] = []
    if record.interrupted:
        how = replace(how, run_failed=how.run_failed or record.interrupted)
    kept = _keep(record, how, notes)
    thresholds, unusable = _thresholds(how, record)
    outcome = _gate(record, how, thresholds, unusable)
    if unusable and outcome is None:
        notes.append(unusable)  # no gate asked for, but the report's trends read them too
    record, outcome, remeasured, added = _remeasure(record, how, thresholds, outcome, notes)
    if kept is not None and added:
        kept = _keep(record, how, notes, again=kept)  # the same folder, now with them
    history = _history(record, how, kept, notes)
    exit_code = outcome.exit_code if outcome else EXIT_OK
    if how.run_failed and exit_code == EXIT_OK:
        exit_code = EXIT_REGRESSION
    exit_code, golden_lines = _golden(record, how, exit_code, notes)
    if how.choices.save_baseline or how.choices.add_session:
        exit_code = _adopt(record, how, exit_code, notes)
    report = _report(record, how, kept, outcome, thresholds, notes, history)
    lines = [Line(h) for h in how.header + remeasured] + _verdict_lines(outcome, bool(remeasured))
    if record.interrupted:
        cut = f"INTERRUPTED ({record.interrupted}): the verdict covers what was measured before it; nothing is adopted"
        lines.insert(0, Line(cut, red=True, bold=True))
    lines += golden_lines
    lines += [Line(n) for n in notes]
    if kept is not None:
        lines.append(Line(f"run saved: {kept}"))
    if report is not None:
        lines.append(Line(f"report: {report.markdown} (figures beside it)", bold=True))
    _markdown(how, outcome, report, lines)
    return Finished(exit_code, lines, outcome, kept, report)


def _keep(record: RunRecord, how: Finish, notes: list[str], again: Path | None = None) -> Path | None:
    """Keep the run under `results_dir` (None: not asked), or `again` where it was kept before. A folder that
    cannot be written is said; the verdict is still given."""
    if how.results_dir is None:
        return None
    try:
        return store.keep_run(how.results_dir, record, again=again)
    except OSError as exc:
        notes.append(f"run NOT kept: {exc}")
        return None


def _history(record: RunRecord, how: Finish, kept: Path | None, notes: list[str]) -> store.KeptRuns:
    """The kept runs like this one (the report's history), read once, after it is kept for the last time; with
    `--bark-keep-runs N` the oldest beyond N are removed first, and said. A history that cannot be read is said; the
    verdict is still given."""
    if how.results_dir is None:
        return [], []
    try:
        runs, skipped = store.kept_runs(how.results_dir, like=record)
    except Exception as exc:  # noqa: BLE001 - an unreadable history must never cost the run its verdict
        notes.append(f"kept runs not read: {type(exc).__name__}: {exc}")
        return [], []
    if kept is None or not how.choices.keep_runs:
        return runs, skipped
    try:
        pruned = store.prune_runs(runs, how.choices.keep_runs, spare=kept)
    except OSError as exc:
        notes.append(f"older kept runs NOT removed (--bark-keep-runs): {exc}")
        return runs, skipped
    if pruned.said:
        notes.append(pruned.said)
    return pruned.left, skipped


def _written(write: Callable[[], None], what: str, notes: list[str]) -> bool:
    """`write()` a stored file (atomically: a failed write leaves the old one whole); a failure is said in `notes`,
    naming `what` was not written and why."""
    try:
        write()
    except OSError as exc:
        notes.append(f"{what} NOT written: {exc}; the stored one is untouched")
        return False
    return True


def _thresholds(how: Finish, record: RunRecord) -> tuple[Thresholds | None, str | None]:
    """pyproject's thresholds for the run's device kind, at `--bark-time-threshold`; or why they cannot be read."""
    try:
        return Thresholds.from_pyproject(how.pyproject, record.device_type).with_time(how.choices.time_threshold), None
    except ThresholdsError as exc:
        return None, str(exc)


def _gate(
    record: RunRecord, how: Finish, thresholds: Thresholds | None, unusable: str | None = None
) -> GateOutcome | None:
    """None when no gate was asked for; `unusable`: why the thresholds could not be read."""
    if not _gate_asked(how):
        return None
    if thresholds is None:
        return _bad_thresholds(unusable)
    opts = _gate_options(how, thresholds)
    if how.against is not None:
        return judge(how.against, record, opts, how.against_label)
    return run_gate(record, opts)


def _gate_asked(how: Finish) -> bool:
    return bool(how.choices.compare or how.choices.baseline or how.against)


def _gate_options(how: Finish, thresholds: Thresholds) -> GateOptions:
    c = how.choices
    return GateOptions(
        how.baselines_dir, thresholds, c.baseline, c.force_compare, c.allow_lost, c.fail_on_noisy, c.per_host_probe
    )


def _bad_thresholds(why: str | None) -> GateOutcome:
    return GateOutcome("bad-thresholds", EXIT_BAD_THRESHOLDS, messages=[f"gate not run: {why}"])


def check_before_measuring(header: RunRecord, how: Finish) -> Finished | None:
    """What would stop the gate, found before the run measures anything instead of after it (on a GPU, half an
    hour later): thresholds pyproject cannot give, a baseline file that is missing or broken, or one that must not
    be compared with this run. `header`: the run's record before it measured. None: go ahead (also when no gate was
    asked for, or there is no baseline yet). The end of the run checks again: a file may change meanwhile."""
    if not _gate_asked(how) or how.against is not None:
        return None
    thresholds, unusable = _thresholds(how, header)
    if thresholds is None:
        outcome: GateOutcome | None = _bad_thresholds(unusable)
    else:
        outcome = before_measuring(header, _gate_options(how, thresholds))
    if outcome is None:
        return None
    lines = [Line(m, red=True) for m in outcome.messages]
    stop = f"nothing measured: {NOT_COMPARED[outcome.status]} (exit status {outcome.exit_code})"
    return Finished(outcome.exit_code, [*lines, Line(stop, red=True, bold=True)], outcome)


def _remeasure(
    record: RunRecord, how: Finish, thresholds: Thresholds | None, outcome: GateOutcome | None, notes: list[str]
) -> tuple[RunRecord, GateOutcome | None, list[str], int]:
    """`--bark-remeasure-noisy`: more invocations of the run while benchmarks are noisy, within the budget
    (`gate.remeasure`). Returns the record and verdict after it, what it did and how many invocations it added; a
    failure leaves the verdict before it."""
    budget = how.choices.remeasure_s
    if not budget or outcome is None or not noisy_ids(outcome):
        return record, outcome, [], 0
    if how.measure_more is None or how.against is not None or record.interrupted:
        why = "a saved run" if how.against is None else "compare-stacks (it sets its trials with --bark-rounds)"
        why = "an interrupted run" if record.interrupted else why
        notes.append(f"noisy benchmarks not re-measured: {why} cannot be measured again here")
        return record, outcome, [], 0
    try:
        done = remeasure_noisy(record, outcome, lambda r: _gate(r, how, thresholds), how.measure_more, budget)
    except Exception as exc:  # noqa: BLE001 - the verdict before it still stands
        notes.append(f"re-measuring the noisy benchmarks failed ({type(exc).__name__}: {exc}); verdict before it")
        return record, outcome, [], 0
    except KeyboardInterrupt:  # Ctrl-C stops the optional extra invocations, not the verdict on the run
        notes.append("re-measuring the noisy benchmarks was interrupted; verdict before it")
        return record, outcome, [], 0
    return done.record, done.outcome, done.lines, done.invocations


def _golden(record: RunRecord, how: Finish, exit_code: int, notes: list[str]) -> tuple[int, list[Line]]:
    """Today's fp32 eager reference against the checkpoint's golden fingerprint (between two stacks: against the
    pinned stack's): a difference fails the run, naming the sub-model and the figure. `--bark-save-golden`
    replaces the golden file after a run that was otherwise clean. Returns the exit status after it."""
    if how.against is not None:
        return _numerics_between_stacks(how.against, record, exit_code)
    if how.golden_dir is None:
        return exit_code, []
    if record.reference is None:
        why = "the fidelity check was off" if any(r.ran for r in record.results) else "nothing was measured"
        if how.choices.save_golden:
            notes.append(f"golden fingerprint NOT saved: this run computed no fp32 eager reference ({why})")
        return exit_code, [Line(f"golden fingerprint: not checked (no fp32 eager reference: {why})")]
    path = golden.golden_path(how.golden_dir, record.checkpoint["key"])
    stored, lines, problems = _against_golden(record, path, how.choices.save_golden)
    if how.choices.save_golden:
        if how.run_failed or exit_code != EXIT_OK:
            why = how.run_failed or f"exit status {exit_code}"
            notes.append(f"golden fingerprint NOT updated: the run failed ({why}); the stored one is untouched")
        else:
            return _save_golden(record, path, notes), lines
    if problems and exit_code == EXIT_OK:
        exit_code = EXIT_REGRESSION
    return exit_code, lines


def _against_golden(record: RunRecord, path: Path, saving: bool) -> tuple[golden.Golden | None, list[Line], list[str]]:
    """The golden fingerprint stored at `path` (None: none, unreadable, or of another revision), what to say of it,
    and how today's reference differs from it (empty: it does not, or there is nothing to compare)."""
    assert record.reference is not None
    stored, lines = None, []
    if path.exists():
        try:
            stored = golden.load(path)
        except golden.GoldenError as exc:
            lines.append(Line(f"golden fingerprint: {exc}", red=True))
    elif not saving:
        lines.append(Line(f"golden fingerprint: none for {record.checkpoint['key']} yet ({path}); adopt this "
                          "run's with --bark-save-golden"))  # fmt: skip
    if stored is None:
        return None, lines, []
    if stored.checkpoint.get("revision") != record.checkpoint.get("revision"):
        lines.append(Line(f"golden fingerprint: {path} is of revision {stored.checkpoint.get('revision')}, this "
                          f"checkpoint is {record.checkpoint.get('revision')}: not compared"))  # fmt: skip
        return None, lines, []
    problems = golden.differences(stored.fingerprint, record.reference)
    if problems:
        text = f"numerics changed: fp32 eager differs from the golden fingerprint ({stored.describe()}): "
        lines.append(Line(text + "; ".join(problems), red=True, bold=True))
    else:
        lines.append(Line(f"golden fingerprint: matches ({stored.describe()})"))
    return stored, lines, problems


def _save_golden(record: RunRecord, path: Path, notes: list[str]) -> int:
    """`--bark-save-golden` after a clean run: today's reference becomes the golden fingerprint. Returns the exit
    status: clean, or a file that could not be written (the stored one untouched)."""
    assert record.reference is not None
    new = golden.Golden(
        checkpoint={k: record.checkpoint.get(k) for k in ("key", "revision")},
        fingerprint=record.reference,
        taken_on=record.hardware,
        environment=record.environment,
    )
    replaces = path.exists()
    if not _written(lambda: golden.write_atomic(path, new), "golden fingerprint", notes):
        return EXIT_BAD_BASELINE
    notes.append(f"golden fingerprint {'updated' if replaces else 'created'}: {path}")
    return EXIT_OK


def _numerics_between_stacks(pinned: RunRecord, record: RunRecord, exit_code: int) -> tuple[int, list[Line]]:
    """compare-stacks: the candidate's fp32 eager reference against the pinned stack's, measured in the same
    session; a difference fails the comparison, naming the sub-model and the figure."""
    if pinned.reference is None or record.reference is None:
        return exit_code, [Line("numerics: not compared (a stack computed no fp32 eager reference)")]
    problems = golden.differences(pinned.reference, record.reference)
    if not problems:
        return exit_code, [Line("numerics: fp32 eager computes the same on both stacks (golden fingerprint)")]
    lines = [Line("numerics changed between the stacks: " + "; ".join(problems), red=True, bold=True)]
    return (EXIT_REGRESSION if exit_code == EXIT_OK else exit_code), lines


def _adopt(record: RunRecord, how: Finish, exit_code: int, notes: list[str]) -> int:
    """Adopt the run as the baseline of its hardware and checkpoint: refused after a failed run, merged with the
    benchmarks it did not rerun (or, `--bark-add-session`, joined to it as one more session), written atomically.
    Returns the exit status after it."""
    if how.run_failed or exit_code != EXIT_OK:
        why = how.run_failed or f"exit status {exit_code}"
        notes.append(
            f"baseline NOT updated: the run failed ({why}); fix the run first, the stored baseline is untouched"
        )
        return exit_code
    path = store.baseline_for(how.baselines_dir, record)
    old = None
    if path.exists():
        try:
            old = store.load(path)
        except store.BaselineError as exc:
            notes.append(f"baseline NOT updated: {exc}; move the broken file away to replace it")
            return EXIT_BAD_BASELINE
    if how.choices.add_session:
        return _add_session(old, record, path, exit_code, notes)
    new = store.merged(old, record)
    if not _written(lambda: store.write_atomic(path, new), "baseline", notes):
        return EXIT_BAD_BASELINE
    ran = len(record.measured())
    added = sorted(set(new.by_id()) - set(old.by_id())) if old else []
    notes.append(
        f"baseline {'updated' if old else 'created'}: {path} ({ran} measured, "
        f"{len(record.results) - ran} unavailable here"
        + (f"; new: {', '.join(added)}" if added else "")
        + (f"; kept from before: {len(new.results) - len(record.results)}" if old else "")
        + ")"
    )
    return exit_code


def _add_session(old: RunRecord | None, record: RunRecord, path: Path, exit_code: int, notes: list[str]) -> int:
    """`--bark-add-session`: the run joins the stored baseline as one more session; refused, the baseline
    untouched, when the two cannot be joined (`store.with_session` says why)."""
    try:
        new = store.with_session(old, record, path)
    except store.BaselineError as exc:
        notes.append(f"baseline NOT updated: {exc}")
        return EXIT_INCOMPARABLE if exit_code == EXIT_OK else exit_code
    if not _written(lambda: store.write_atomic(path, new), "baseline", notes):
        return EXIT_BAD_BASELINE
    dropped = (len(old.sessions or [old.created]) + 1 - len(new.sessions or [new.created])) if old else 0
    notes.append(
        f"baseline {'session added' if old else 'created'}: {path} ({store.sessions_said(new)}"
        + (f"; the oldest {dropped} dropped: {store.MAX_SESSIONS} are kept" if dropped else "")
        + ")"
    )
    return exit_code


def _report(
    record: RunRecord,
    how: Finish,
    kept: Path | None,
    outcome: GateOutcome | None,
    thresholds: Thresholds | None,
    notes: list[str],
    history: store.KeptRuns,
) -> WrittenReport | None:
    """The report goes into the kept run's folder (or `report_dir`, which then gets the run's JSON too); the
    other kept runs are its `history` (`_history`). A broken report never costs the run its verdict."""
    folder = how.report_dir or (kept.parent if kept else None)
    if folder is None:
        return None
    try:
        if kept is None or folder != kept.parent:
            store.write_atomic(folder / RUN_FILE, record)
        per_probe = how.choices.per_host_probe
        return markdown.write(folder, record, outcome, *history, thresholds, per_probe)
    except Exception as exc:  # noqa: BLE001 - a broken report must never cost the run its verdict
        notes.append(f"report not written: {type(exc).__name__}: {exc}")
        return None


def _verdict_lines(outcome: GateOutcome | None, remeasured: bool = False) -> list[Line]:
    if outcome is None:
        return [Line(NOT_ASKED)]
    if outcome.comparison is None and outcome.exit_code != EXIT_OK:
        failed = f"bark gate FAILED: {NOT_COMPARED[outcome.status]}; nothing compared"
        return [*(Line(m, red=True) for m in outcome.messages), Line(failed, red=True, bold=True)]
    lines = [Line(m) for m in outcome.messages]
    if outcome.comparison is not None:
        several = outcome.baseline is not None and len(outcome.baseline.sessions or []) > 1
        taken = f" ({store.sessions_said(outcome.baseline)})" if several and outcome.baseline else ""
        lines.append(Line(f"baseline: {outcome.baseline_path}{taken}"))
        lines.append(Line(verdict_table(outcome.comparison, measured_only=True)))
        lines += [Line(text) for text in not_measured_lines(outcome.comparison) + paired_lines(outcome.comparison)]
        lines.append(Line(summary_line(outcome.comparison), red=outcome.comparison.failed, bold=True))
        lines.append(Line(rule_line(outcome.comparison)))
        if hint := what_decides(outcome.comparison, remeasured):
            lines.append(Line(hint))
    return lines


def _markdown(how: Finish, outcome: GateOutcome | None, report: WrittenReport | None, lines: list[Line]) -> None:
    """GitHub Actions' job summary (or any Markdown file, its folder made): the report without its images, else
    the verdict. A file that cannot be written is said in `lines`; the verdict stands."""
    target = how.choices.markdown
    if target is None:
        return
    if report is not None:
        text = report.summary
    elif outcome is not None and outcome.comparison is not None:
        text = markdown_section(outcome.comparison, outcome.baseline_path)
    else:
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("a", encoding="utf-8") as f:
            f.write(text)
    except OSError as exc:
        lines.append(Line(f"Markdown summary NOT written to {target}: {exc}"))
