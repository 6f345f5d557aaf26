"""The gate: decisions on saved records, in-process through the one end-of-run path (`finish`), and the wiring
of `pytest benchmarks` proven by a few real runs in subprocesses.

The records judged in-process are a real run of the suite (the `healthy` fixture) with its latency rounds set to
a fixed +-2% spread around their median (`steady`: this shared machine's own noise must not decide a test),
changed the way a regression would change them: every round 4x slower, 256 MB more host memory, a configuration
lost or new, another hardware or workload, a damaged baseline. No decision here depends on how busy the machine is.
"""

from __future__ import annotations

import json
import re
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from suite import ROOT, baseline_file, bench, out, row, without_drift

from perf_utils.finish import Finish, Finished, check_before_measuring, finish
from perf_utils.gate.compare import NOT_JUDGED
from perf_utils.gate.decide import (
    EXIT_BAD_BASELINE,
    EXIT_BAD_THRESHOLDS,
    EXIT_INCOMPARABLE,
    EXIT_OK,
    EXIT_REGRESSION,
    NOT_ASKED,
)
from perf_utils.measure.settings import ONEDNN_CACHE
from perf_utils.options import FinishChoices
from perf_utils.record import store
from perf_utils.record.metrics import HOST_ALLOC_PEAK, HOST_PROBE, INVOCATION_PROBE
from perf_utils.record.record import FORKED, UNAVAILABLE, BenchmarkResult, RunRecord, Schedule

CHOICES = FinishChoices(
    compare=True,
    baselines_dir=None,
    baseline=None,
    force_compare=False,
    allow_lost=frozenset(),
    fail_on_noisy=False,
    time_threshold=None,
    per_host_probe=False,
    remeasure_s=0.0,
    save_baseline=False,
    add_session=False,
    save_golden=False,
    golden_dir=None,
    results_dir=None,
    markdown=None,
    pyproject=None,
)


def gate(
    record: RunRecord, tmp: Path, measure_more: Any = None, pyproject: Path = ROOT / "pyproject.toml", **choices: object
) -> tuple[Finished, str]:
    """`finish` as `pytest benchmarks --benchmark-compare` calls it, baselines and kept runs under `tmp`;
    `measure_more` as the run loop's (`--bark-remeasure-noisy`)."""
    how = Finish(
        choices=replace(CHOICES, **choices),
        baselines_dir=tmp / "baselines",
        pyproject=pyproject,
        results_dir=tmp / "results",
        measure_more=measure_more,
    )
    done = finish(record, how)
    return done, "\n".join(line.text for line in done.lines)


def steady(record: RunRecord) -> RunRecord:
    """A copy of `record` whose latency rounds are spread evenly over +-2% of their median (throughput follows)."""
    new = record.copy()
    for r in new.results:
        median, n = r.median("latency_s"), len(r.rounds)
        spread = [0.98 + 0.04 * i / (n - 1) for i in range(n)] if n > 1 else [1.0]
        r.rounds = [{**rnd, "latency_s": median * f, "throughput_sps": r.batch_size / (median * f)}
                    for rnd, f in zip(r.rounds, spread, strict=True)]  # fmt: skip
    return new


def scaled(record: RunRecord, metric: str, factor: float = 1.0, add: float = 0.0) -> RunRecord:
    """A copy of `record` with every round's `metric` changed (throughput follows latency)."""
    new = record.copy()
    for r in new.results:
        for rnd in (rnd for rnd in r.rounds if metric in rnd):  # host allocations: on each invocation's first
            rnd[metric] = rnd[metric] * factor + add
            if metric == "latency_s":
                rnd["throughput_sps"] = r.batch_size / rnd["latency_s"]
    return new


@pytest.fixture
def run(healthy) -> RunRecord:
    """The healthy run, steadied: what each in-process test changes and judges."""
    return steady(healthy.record)


@pytest.fixture
def work(run, tmp_path) -> Path:
    """A private baseline (the steadied healthy run) for one test to compare against (or damage)."""
    store.write_atomic(baseline_file(tmp_path), run)
    return tmp_path


# --- decisions, in-process ---------------------------------------------------------------------------------------


def test_unchanged_record_compares_clean_and_writes_the_job_summary(run, work):
    """The same rounds: unchanged, exit 0, the Markdown summary written. Moved by +2%, within the CPU's drift
    between a baseline and a run (pyproject's `drift`), the interval reaches the threshold: noisy, still exit 0."""
    summary = work / "summary.md"
    done, text = gate(run, work, markdown=summary)
    assert done.exit_code == EXIT_OK, text
    for bid in ("bs1-fp32", "bs8-fp32"):
        assert "unchanged" in row(text, bid)
    assert "bark gate passed: 2 unchanged" in text
    markdown = summary.read_text()
    assert "| bs1-fp32 " in markdown and "bark gate passed" in markdown
    done, text = gate(scaled(run, "latency_s", 1.02), work)
    assert done.exit_code == EXIT_OK and "NOISY" in row(text, "bs1-fp32"), text
    assert "time intervals include the machine's drift between the two runs (5% SD, pyproject)" in text


def test_a_baseline_of_another_stack_says_so_and_how_to_judge_the_stack_change_paired(run, work):
    """Against a stored baseline from another transformers, the verdict may be the stack's or the day's: said, with
    the command that measures both stacks in one session. The same stack: no note."""
    _, text = gate(run, work)
    assert "measured with another stack" not in text
    older = run.copy()
    older.environment["packages"]["transformers"] = "5.23.0"
    store.write_atomic(baseline_file(work), older)
    _, text = gate(run, work)
    now = run.environment["packages"]["transformers"]
    assert f"the baseline was measured with another stack (transformers 5.23.0 -> {now})" in text
    assert "compare-stacks --pinned baseline --candidate current" in text


def assert_regressed(done: Finished, text: str, metric_label: str) -> None:
    assert done.exit_code == EXIT_REGRESSION, text
    for bid in ("bs1-fp32", "bs8-fp32"):
        line = row(text, bid)
        assert "REGRESSED" in line and metric_label in line, line
    assert "bark gate FAILED" in text


def test_a_4x_slowdown_fails_naming_the_benchmark_and_latency(run, work):
    assert_regressed(*gate(scaled(run, "latency_s", 4.0), work), "latency")


def test_a_machine_4x_slower_for_every_program_passes_when_time_is_judged_per_host_probe(run, work):
    """--bark-time-per-host-probe: the same rounds with the host probe 4x slower too are the machine, not Bark;
    Bark 4x slower on a machine as fast as before still fails."""
    machine = scaled(scaled(scaled(run, "latency_s", 4.0), HOST_PROBE, 4.0), INVOCATION_PROBE, 4.0)
    done, text = gate(machine, work)
    assert done.exit_code == EXIT_REGRESSION and "host probe (fixed CPU work after each round) +300.0% slower" in text
    done, text = gate(machine, work, per_host_probe=True)
    assert done.exit_code == EXIT_OK, text
    said = "latency and throughput judged per host probe (this run's probe +300.0% against the baseline's over all"
    assert said + " its benchmarks)" in text
    done, text = gate(scaled(run, "latency_s", 4.0), work, per_host_probe=True)
    assert_regressed(done, text, "latency")


def test_an_extra_256_mb_fails_on_host_memory(run, work):
    """Counted host allocations: the real run measured them in one call a side, and that count decides."""
    assert all(len(r.values(HOST_ALLOC_PEAK)) == 1 for r in run.results)
    assert_regressed(*gate(scaled(run, HOST_ALLOC_PEAK, add=256.0), work), "host allocations peak")


def test_a_fidelity_failure_fails_the_gate_at_unchanged_speed(run, work):
    now = run.copy()
    fid = now.by_id()["bs1-fp32"].fidelity
    fid.passed, fid.problems = False, ["fine logits relative error 1.07e-02 > 1e-04"]
    done, text = gate(now, work)
    assert done.exit_code == EXIT_REGRESSION, text
    line = row(text, "bs1-fp32")
    assert "FAIL" in line and "REGRESSED" in line and "fidelity: fine" in line
    assert "unchanged" in row(text, "bs8-fp32")


def _with(record: RunRecord, config: str, status: str = "ok", batch_sizes: tuple[int, ...] = (1,)) -> RunRecord:
    """`record` plus `config` at these batch sizes (measured like bs1-fp32, or unavailable)."""
    new = record.copy()
    src = new.by_id()["bs1-fp32"]
    for bs in batch_sizes:
        if status == "ok":
            new.put(replace(src, config=config, batch_size=bs))
        else:
            why = "bettertransformer needs optimum<2.0 and transformers<4.49; found optimum 2.3.0"
            new.put(BenchmarkResult(config, bs, UNAVAILABLE, why))
    return new


def test_a_lost_configuration_fails_unless_allowed(run, work):
    store.write_atomic(baseline_file(work), _with(run, "bettertransformer"))
    now = _with(run, "bettertransformer", UNAVAILABLE)
    done, text = gate(now, work)
    assert done.exit_code == EXIT_REGRESSION, text
    line = row(text, "bs1-bettertransformer")
    assert "LOST" in line and "bettertransformer needs optimum<2.0" in line
    assert line.split()[1] == f"{run.by_id()['bs1-fp32'].median('latency_s'):.3f}"  # what it had
    allowed, text = gate(now, work, allow_lost=frozenset({"bettertransformer"}))
    assert allowed.exit_code == EXIT_OK, text
    assert "lost (allowed)" in row(text, "bs1-bettertransformer")


def test_a_new_configuration_is_reported_and_one_not_selected_is_not_run(run, work):
    """What a run did not select holds no measurement: one line under the table names it, not a row each (a run of
    two configurations would otherwise print twenty rows of the others); a configuration none of whose benchmarks
    ran is named whole."""
    now = _with(run, "bf16")
    now.results = [r for r in now.results if r.batch_size == 1]
    done, text = gate(now, work)
    assert done.exit_code == EXIT_OK, text
    assert " new " in row(text, "bs1-bf16") + " "
    assert not [ln for ln in text.splitlines() if ln.startswith("bs8-fp32 ")], text
    assert "\nnot run, not selected in this run: bs8-fp32\n" in text, text
    store.write_atomic(baseline_file(work), _with(run, "bf16"))
    only_fp32 = run.copy()
    _, text = gate(only_fp32, work)
    assert "\nnot run, not selected in this run: bf16\n" in text, text


def test_no_baseline_keeps_the_run_and_says_how_to_adopt(run, tmp_path):
    done, text = gate(run, tmp_path)
    assert done.exit_code == EXIT_OK, text
    assert "no baseline for hardware" in text and "--bark-save-baseline" in text
    assert done.kept is not None and store.load(done.kept).results == run.results


def test_other_hardware_is_never_compared_silently(run, work):
    other = work / "baselines" / "nvidia-h100-80gb-hbm3" / "tiny.json"
    moved = run.copy()
    moved.hardware = "nvidia-h100-80gb-hbm3"
    store.write_atomic(other, moved)
    baseline_file(work).unlink()
    found, text = gate(run, work)
    assert found.exit_code == EXIT_OK, text
    assert "were NOT compared" in text and "nvidia-h100-80gb-hbm3" in text
    explicit, text = gate(run, work, baseline=other)
    assert explicit.exit_code == EXIT_INCOMPARABLE, text
    assert "refusing to compare" in text and "hardware differs" in text
    forced, text = gate(run, work, baseline=other, force_compare=True)
    assert forced.exit_code == EXIT_OK, text  # the same numbers: compared, and unchanged
    assert "comparing with" in text and "unchanged" in row(text, "bs1-fp32")


def test_another_workload_is_refused(run, work):
    now = run.copy()
    now.workload = {**now.workload, "n_tokens": 24}
    done, text = gate(now, work)
    assert done.exit_code == EXIT_INCOMPARABLE, text
    assert "workload differs: n_tokens 16 -> 24" in text


BAD_BASELINES = {
    "invalid-json": (lambda text: text[: len(text) // 2], "invalid JSON at line"),
    "unknown-schema": (
        lambda text: re.sub(r'"schema_version": \d+', '"schema_version": 99', text),
        "schema_version",
    ),
    "missing-field": (
        lambda text: json.dumps({k: v for k, v in json.loads(text).items() if k != "workload"}),
        "'workload' is a required property",
    ),
    "mistyped-field": (
        lambda text: text.replace('"latency_s": ', '"latency_s": "slow", "x": ', 1),
        "results[0].rounds[0].latency_s",
    ),
}


@pytest.mark.parametrize("case", BAD_BASELINES, ids=list(BAD_BASELINES))
def test_a_bad_baseline_names_file_and_field_and_is_not_overwritten(run, work, case):
    damage, expected = BAD_BASELINES[case]
    path = baseline_file(work)
    path.write_text(damage(path.read_text()))
    before = path.read_bytes()
    done, text = gate(run, work, save_baseline=True)
    assert done.exit_code == EXIT_BAD_BASELINE, text
    assert str(path) in text and expected in text
    assert path.read_bytes() == before
    # said again under pytest-benchmark's table: why the gate failed, not only the report's path
    assert "bark gate FAILED: the baseline file cannot be used; nothing compared" in [h.text for h in done.headline]


def _header(record: RunRecord) -> RunRecord:
    """What the run loop's record holds before it measured anything: where, what and how, no results."""
    header = record.copy()
    header.results = []
    return header


def test_what_would_stop_the_gate_is_found_before_measuring(run, work, tmp_path):
    """A missing or broken --bark-baseline, a baseline of other hardware or unusable thresholds stop the run before
    it measures (exit 10, 11, 4 as after a run), each saying why; what the gate can judge goes ahead."""

    def check(**choices: object) -> tuple[int | None, str]:
        pyproject = choices.pop("pyproject", ROOT / "pyproject.toml")
        how = Finish(choices=replace(CHOICES, **choices), baselines_dir=work / "baselines", pyproject=pyproject)
        stop = check_before_measuring(_header(run), how)
        return (None, "") if stop is None else (stop.exit_code, "\n".join(line.text for line in stop.lines))

    assert check() == (None, "")  # this machine's baseline, comparable
    assert check(baseline=baseline_file(work)) == (None, "")
    code, text = check(baseline=work / "typo.json")
    assert code == EXIT_BAD_BASELINE and f"{work / 'typo.json'}: no such baseline file" in text, text
    assert text.endswith("nothing measured: the baseline file cannot be used (exit status 10)"), text
    broken = work / "broken.json"
    broken.write_text(baseline_file(work).read_text()[:100])
    code, text = check(baseline=broken)
    assert code == EXIT_BAD_BASELINE and "invalid JSON" in text, text
    other = run.copy()
    other.hardware = "nvidia-h100-80gb-hbm3"
    store.write_atomic(elsewhere := work / "h100.json", other)
    code, text = check(baseline=elsewhere)
    assert code == EXIT_INCOMPARABLE and "hardware differs: baseline nvidia-h100-80gb-hbm3" in text, text
    assert check(baseline=elsewhere, force_compare=True) == (None, "")
    bad = tmp_path / "pyproject.toml"
    bad.write_text("[tool.bark-perf.thresholds.cpu]\ntime = 'fast'\n")
    code, text = check(pyproject=bad)
    assert code == EXIT_BAD_THRESHOLDS and "thresholds.cpu].time must be a number" in text, text
    assert check(pyproject=bad, compare=False) == (None, "")  # no gate asked for: nothing to stop
    baseline_file(work).unlink()
    assert check() == (None, "")  # no baseline yet: the run goes ahead and says how to adopt it


def test_a_folder_that_cannot_be_written_costs_neither_the_verdict_nor_a_stored_file(run, work):
    """Kept runs, the baseline, the golden fingerprint and the job summary each written where a file stands in the
    way: each is said NOT written, the verdict is still given, and a baseline or golden file asked for and not
    written fails the run (exit 10). A summary's missing folder is made."""
    blocker = work / "a-file"
    blocker.write_text("in the way")
    how = Finish(
        choices=replace(CHOICES, markdown=blocker / "summary.md"),
        baselines_dir=work / "baselines",
        pyproject=ROOT / "pyproject.toml",
        results_dir=blocker / "results",
    )
    done = finish(run, how)
    text = "\n".join(line.text for line in done.lines)
    assert done.exit_code == EXIT_OK and "unchanged" in row(text, "bs1-fp32"), text
    assert f"run NOT kept: [Errno 20] Not a directory: '{blocker}" in text and done.kept is None, text
    assert f"Markdown summary NOT written to {blocker / 'summary.md'}: " in text, text
    nested = work / "new" / "folder" / "summary.md"
    done, text = gate(run, work, markdown=nested)
    assert "bark gate passed" in nested.read_text(), text
    for choice, what in (("save_baseline", "baseline"), ("save_golden", "golden fingerprint")):
        how = Finish(
            choices=replace(CHOICES, compare=False, **{choice: True}),
            baselines_dir=blocker / "baselines",
            pyproject=ROOT / "pyproject.toml",
            golden_dir=blocker / "golden",
        )
        done = finish(run, how)
        text = "\n".join(line.text for line in done.lines)
        assert done.exit_code == EXIT_BAD_BASELINE, text
        assert f"{what} NOT written: [Errno 20] Not a directory" in text and "the stored one is untouched" in text
    assert blocker.read_text() == "in the way"


def test_a_failed_run_never_updates_the_baseline(run, work):
    path = baseline_file(work)
    before = path.read_bytes()
    how = Finish(
        choices=replace(CHOICES, compare=False, save_baseline=True),
        baselines_dir=work / "baselines",
        pyproject=ROOT / "pyproject.toml",
        run_failed="bs1-fp32",
    )
    done = finish(scaled(run, "latency_s", 0.5), how)
    text = "\n".join(line.text for line in done.lines)
    assert done.exit_code == EXIT_REGRESSION
    assert "baseline NOT updated: the run failed (bs1-fp32)" in text
    assert path.read_bytes() == before


def test_a_regression_is_never_adopted(run, work):
    path = baseline_file(work)
    before = path.read_bytes()
    done, text = gate(scaled(run, "latency_s", 4.0), work, save_baseline=True)
    assert done.exit_code == EXIT_REGRESSION and "baseline NOT updated" in text
    assert path.read_bytes() == before


def test_an_update_merges_and_says_what_changed(run, work):
    now = _with(run, "bf16")
    now.results = [r for r in now.results if r.config == "bf16"]
    done, text = gate(now, work, save_baseline=True)
    assert done.exit_code == EXIT_OK, text
    assert "baseline updated" in text and "new: bs1-bf16" in text and "kept from before: 2" in text
    ids = {r.id for r in store.load(baseline_file(work)).results}
    assert ids == {"bs1-fp32", "bs8-fp32", "bs1-bf16"}  # nothing that was not rerun is lost


def test_add_session_joins_the_baseline_and_a_session_of_another_stack_is_refused(run, work):
    """`--bark-add-session`: the run joins the stored baseline as one more session (its rounds labelled, the
    baseline's kept); one measured with another stack is refused with the package named, the file untouched."""
    path = baseline_file(work)
    stored = store.load(path)
    later = replace(scaled(run, "latency_s", 1.01), created="2099-01-01T00:00:00+00:00")
    done, text = gate(later, work, add_session=True)
    assert done.exit_code == EXIT_OK, text
    assert f"baseline session added: {path} (2 sessions" in text
    joined = store.load(path)
    assert joined.sessions == [stored.created, later.created]
    for r in joined.measured():
        assert r.rounds == stored.by_id()[r.id].rounds + later.by_id()[r.id].rounds
        assert set(r.sessions) == {0, 1}
    done, text = gate(later, work)
    assert f"baseline: {path} (2 sessions, {stored.created[:16]} to 2099-01-01T00:00)" in text
    before = path.read_bytes()
    other = later.copy()
    other.environment["packages"] = {**other.environment["packages"], "transformers": "0.0.1"}
    done, text = gate(other, work, add_session=True)
    assert done.exit_code == EXIT_INCOMPARABLE
    assert f"baseline NOT updated: {path}: cannot take this run as one more session" in text
    assert "transformers differs" in text and path.read_bytes() == before


def test_a_stored_schedule_is_read_typed_keeps_what_it_does_not_know_and_a_bad_one_is_named(run, work):
    """The schedule is read into `record.Schedule`; a key of another version is written back as it was (an added
    session rewrites the file), and a malformed field is refused by the schema, naming it."""
    path = baseline_file(work)
    data = json.loads(path.read_text())
    data["schedule"] = {"invocations": 3, "rounds": 2, "interleaved": True, "threads": 1}
    path.write_text(json.dumps(data))
    stored = store.load(path)
    assert (stored.schedule.invocations, stored.in_caller, stored.schedule.extra) == (3, False, {"threads": 1})
    assert stored.to_dict()["schedule"] == data["schedule"]
    data["schedule"]["remeasured"] = {"invocations": "two", "noisy": []}
    path.write_text(json.dumps(data))
    with pytest.raises(store.BaselineError, match="schedule.*remeasured.*invocations"):
        store.load(path)


def test_a_baseline_of_the_previous_schema_is_migrated_not_refused(run, work):
    """Schema 1 called the fp32 configuration `baseline`: read, renamed, said, compared."""
    path = baseline_file(work)
    data = json.loads(path.read_text())
    data["schema_version"] = 1
    for r in data["results"]:
        r["config"] = "baseline"
    path.write_text(json.dumps(data))
    done, text = gate(run, work)
    assert done.exit_code == EXIT_OK, text
    assert "an older record (schema 1)" in text and "configuration 'baseline' is now 'fp32'" in text
    assert "unchanged" in row(text, "bs1-fp32") and "unchanged" in row(text, "bs8-fp32")


def test_a_baseline_taken_on_another_schedule_is_compared_with_a_note(run, work):
    """The fixture runs in the calling process; a run in three worker processes is still judged, and told so. What
    else a process holds moves its RSS rise (+66% for tiny's bs1 in pytest's process against forked workers), so
    RSS rises are shown, never judged; the host allocations are counted alike in any process (15.789 MB for bs1-fp32
    in pytest's process and in workers, 2026-12-03), so +70% of them is a regression either way."""
    assert run.in_caller
    now = scaled(scaled(run, "host_peak_mb", 1.7), HOST_ALLOC_PEAK, 1.7)
    now.schedule = Schedule(invocations=3, rounds=2, interleaved=True, seed=0, workers=FORKED)
    done, text = gate(now, work)
    assert (
        "the baseline's rounds were taken interleaved, in the calling process, this run's interleaved, in 3 worker "
        "processes; so RSS rises are not compared" in text
    )
    assert_regressed(done, text, "host allocations peak +70.0%")
    assert done.outcome is not None and done.outcome.comparison is not None
    rise = done.outcome.comparison.verdicts[0].metric("host_peak_mb")
    assert rise is not None and rise.verdict == NOT_JUDGED and "RSS rise" not in row(text, "bs1-fp32")
    assert done.report is not None  # the note is a list item of its own, not the summary's first words
    md = done.report.markdown.read_text()
    assert "\n\n**bark gate FAILED" in md, md
    notes = md.split("\n\n**bark gate FAILED", 1)[0].rsplit("\n\n", 1)[1]  # the paragraph above the summary
    assert "- note: the baseline's rounds were taken" in notes.splitlines()[0], notes
    assert all(line.startswith("- ") for line in notes.splitlines()), notes
    alike, same = gate(scaled(run, "host_peak_mb", 1.7), work)
    assert "rounds were taken" not in same
    assert alike.exit_code == EXIT_OK and "RSS rise" not in row(same, "bs1-fp32"), same


def without_allocations(record: RunRecord) -> RunRecord:
    """`record` as a suite before memray counted host allocations (or one without memray) measured it."""
    old = record.copy()
    for r in old.results:
        r.rounds = [{k: v for k, v in rnd.items() if k != HOST_ALLOC_PEAK} for rnd in r.rounds]
    return old


def test_a_baseline_without_host_allocations_is_compared_with_a_note_and_its_rss_rise_is_not_a_gate(run, work):
    """A baseline from before the suite counted host allocations holds only RSS rises, which are not gated: the run
    passes however its RSS moved, and says that host memory was not judged and what to do, either way round."""
    store.write_atomic(baseline_file(work), without_allocations(run))
    done, text = gate(scaled(run, "host_peak_mb", 3.0), work)
    assert done.exit_code == EXIT_OK, text
    said = "note: host memory is not judged: the baseline counted no host allocations (host_alloc_peak_mb, memray)"
    assert said in text and "retake the baseline" in text
    store.write_atomic(baseline_file(work), run)
    done, text = gate(without_allocations(run), work)
    assert "note: host memory is not judged: this run counted no host allocations" in text, text
    assert "install memray (pip install memray)" in text
    done, text = gate(run, work)
    assert "host memory is not judged" not in text, text


def test_a_baseline_whose_processes_kept_another_number_of_onednn_kernels_is_compared_with_a_note(run, work):
    """A record from before the suite sized oneDNN's kernel cache (no key: oneDNN's default 1024) against a run
    that kept 16384: judged, and told why half precision may read faster. Alike, or on a GPU, nothing is said."""
    now = run.copy()
    now.environment[store.ONEDNN_CACHE_KEY] = ONEDNN_CACHE
    path = baseline_file(work)
    data = json.loads(path.read_text())
    data["environment"].pop(store.ONEDNN_CACHE_KEY, None)
    path.write_text(json.dumps(data))
    done, text = gate(now, work)
    assert done.exit_code == EXIT_OK, text
    assert f"note: the baseline's processes kept 1024 oneDNN kernels, this run's {ONEDNN_CACHE}: " in text, text
    old = store.load(path)
    assert store.setting_notes(old, old) == []
    assert store.setting_notes(old, replace(now, device="cuda:0")) == []


def test_a_baseline_in_more_processes_than_the_run_is_compared_like_with_like(run, work):
    """A baseline takes 10 invocations on purpose (BASELINE_INVOCATIONS) and a run 3: no note to retake it."""
    base, now = run.copy(), run.copy()
    base.schedule = Schedule(invocations=10, rounds=2, interleaved=True, seed=0)
    now.schedule = Schedule(invocations=3, rounds=2, interleaved=True, seed=0)
    store.write_atomic(baseline_file(work), base)
    done, text = gate(now, work)
    assert done.exit_code == EXIT_OK, text
    assert "rounds were taken" not in text


def test_the_time_threshold_option_judges_time_at_its_own_least_change(run, work):
    """+10% on steady rounds: inside pyproject's 15% for the CPU, a regression at --bark-time-threshold 0.07;
    memory keeps pyproject's threshold. (Without the CPU's drift, which alone would call +10% noisy at 7%.)"""
    now = scaled(run, "latency_s", 1.10)
    plain = without_drift(work)
    done, text = gate(now, work, pyproject=plain)
    assert done.exit_code == EXIT_OK, text
    done, text = gate(now, work, pyproject=plain, time_threshold=0.07)
    assert done.exit_code == EXIT_REGRESSION, text
    assert "REGRESSED" in row(text, "bs1-fp32") and "latency" in row(text, "bs1-fp32")
    assert done.outcome is not None and done.outcome.comparison is not None
    th = done.outcome.comparison.thresholds
    assert (th.time, th.throughput, th.memory) == (0.07, 0.07, 0.05)


def test_the_committed_baseline_reads_under_this_schema():
    for path in (ROOT / "baselines").glob("*/*.json"):
        record = store.load(path)
        assert record.migrated is None, f"{path} is stored in an older schema: {record.migrated}"
        assert {r.config for r in record.results} >= {"fp32"}


# --- the wiring, in real runs ------------------------------------------------------------------------------------


def test_pytest_benchmarks_gates_reports_and_sets_the_exit_status(regressed):
    """A real regressed run: our verdict rows, pytest-benchmark's own gate beside it, exit 1, nothing else failed."""
    output = regressed.output
    assert regressed.proc.returncode == EXIT_REGRESSION, output
    assert all(r.ran for r in regressed.record.results)  # no benchmark failed: the exit status comes from the gates
    for bid in ("bs1-fp32", "bs8-fp32"):
        line = row(output, bid)
        assert "REGRESSED" in line and "latency" in line
        assert "; most in coarse: +" in line, output  # the stage the injected slowdown sat in
    assert " new " in row(output, "bs1-bf16") + " "
    assert "bark gate FAILED" in output and "Performance has regressed" in output
    lines = output.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("bark gate FAILED"))
    assert "interval" not in lines[at] and lines[at + 1].startswith("A change is called when its 98% interval")
    # after pytest-benchmark's table of the replayed rounds, the verdict again: the last thing read is not raw timings
    table = max(i for i, line in enumerate(lines) if line.startswith("Name (time in"))
    assert max(len(line) for line in lines[table - 2 : table + 4]) <= 140, output  # fits a terminal (pyproject)
    recap = lines.index("bark performance gate (its table is above):")
    assert table < recap and lines[recap + 1].strip().startswith("bark gate FAILED"), output
    assert lines[recap + 2].strip().startswith("report: "), output


def test_pytest_benchmarks_stops_before_measuring_when_the_gate_could_not_judge_the_run(run, tmp_path):
    """A --bark-baseline of other hardware: refused at the first benchmark, before any model is measured (exit 11,
    as after a run), with why and how to override; no run kept."""
    other = tmp_path / "h100.json"
    store.write_atomic(other, replace(run, hardware="nvidia-h100"))
    proc = bench(tmp_path, "--bark-configs", "fp32", "--bark-batch-sizes", "1", "--bark-baseline", str(other), "-v")
    output = out(proc)
    assert proc.returncode == EXIT_INCOMPARABLE, output
    assert "hardware differs: baseline nvidia-h100, now" in output and "(override with --bark-force-compare)" in output
    assert "nothing measured: the baseline must not be compared with this run (exit status 11)" in output
    assert "warm-up" not in output and not (tmp_path / "results").exists(), output


def test_benchmark_skip_announces_no_benchmarks_and_measures_nothing(tmp_path):
    proc = bench(tmp_path, "--bark-configs", "fp32", "--bark-batch-sizes", "1", "--benchmark-skip")
    output = out(proc)
    assert proc.returncode == 0 and "1 skipped" in output, output
    assert "bark-perf:" not in output and not (tmp_path / "results").exists(), output


def test_a_fidelity_fault_fails_its_benchmark_and_the_gate(healthy, work):
    """Slightly drifted fine-model weights: the same work, so only the fidelity check catches it."""
    proc = bench(work, "--bark-configs", "fp32", "--bark-batch-sizes", "1", "--benchmark-compare",
                 fault="perturb_weights")  # fmt: skip
    output = out(proc)
    assert proc.returncode == EXIT_REGRESSION, output
    assert "computes something else: fine logits relative error" in output  # the benchmark itself fails
    assert "Can't compare" not in output  # pytest-benchmark's storage is empty, but the suite's gate compared
    line = row(output, "bs1-fp32")
    assert "FAIL" in line and "REGRESSED" in line and "fidelity: fine" in line


def test_a_crashing_run_never_updates_the_baseline(work):
    path = baseline_file(work)
    before = path.read_bytes()
    proc = bench(work, "--bark-configs", "fp32", "--bark-batch-sizes", "1", "--bark-save-baseline",
                 "--bark-rounds", "1", "--bark-warmup", "0", "--bark-no-fidelity", fault="crash")  # fmt: skip
    assert proc.returncode == 1, out(proc)
    assert "RuntimeError: injected crash" in out(proc)
    assert "baseline NOT updated: the run failed (bs1-fp32)" in out(proc)
    assert path.read_bytes() == before


def test_an_interrupted_run_never_damages_the_baseline_and_keeps_what_it_measured(work):
    """Ctrl-C as the second trial begins: pytest stops ("interrupted"), the baseline is untouched, and the run
    is kept and reported with the round each benchmark took (a nightly cut by its time limit loses nothing)."""
    path = baseline_file(work)
    before = path.read_bytes()
    proc = bench(work, "--bark-configs", "fp32", "--bark-save-baseline", "--bark-no-fidelity", "-v", popen=True)
    deadline = time.monotonic() + 300
    seen = ""
    for line in proc.stdout:  # interrupt in the middle of measuring
        seen += line
        if ": round 2/" in line or time.monotonic() > deadline:
            break
    assert ": round 2/" in seen, seen
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, seen + rest  # pytest's "interrupted"
    assert "KeyboardInterrupt" in rest
    assert "INTERRUPTED (interrupted in invocation 1 of 1: its rounds so far are kept)" in rest, rest
    assert "was not used at all" not in rest  # pytest-benchmark's fixture warning: no misuse, an interrupt
    assert "baseline NOT updated: the run failed (interrupted in invocation 1 of 1" in rest
    assert path.read_bytes() == before
    assert not list(path.parent.glob("*.tmp"))
    [kept] = (work / "results").glob("*/run.json")
    record = store.load(kept)
    assert record.interrupted and {r.id for r in record.measured()} == {"bs1-fp32", "bs8-fp32"}
    assert all(len(r.rounds) == 1 for r in record.measured())
    assert "**interrupted in invocation 1 of 1: its rounds so far are kept**" in (kept.parent / "report.md").read_text()


@pytest.mark.parametrize("hook_fails", [False, True])
def test_a_run_interrupted_before_it_measured_anything_keeps_no_run(tmp_path, hook_fails):
    """Ctrl-C in the first warm-up: the unavailable configuration's reason is all the run holds, which is no run to
    keep or judge (it would read as every benchmark "not run" in the history). Also where pytest's own handling of
    the interrupt fails (`hook_fails`; seen in CI 2026-12-03: an interrupt inside an import left a frame without a
    line number, pytest 9.2's traceback formatter raised TypeError, the session ended as an internal error, and the
    plugin kept and reported a run that measured nothing)."""
    extra = {}
    if hook_fails:
        (tmp_path / "failing_interrupt_hook.py").write_text(
            "import pytest\n\n\n@pytest.hookimpl(tryfirst=True)\ndef pytest_keyboard_interrupt(excinfo):\n"
            "    raise TypeError(\"unsupported operand type(s) for -: 'NoneType' and 'int'\")\n"
        )
        extra = {"PYTHONPATH": str(tmp_path)}
    plugin = ["-p", "failing_interrupt_hook"] if hook_fails else []
    proc = bench(tmp_path, "--bark-configs", "fp32,bettertransformer", "--bark-batch-sizes", "1", "--bark-no-fidelity",
                 "-v", *plugin, popen=True, **extra)  # fmt: skip
    seen = ""
    for line in proc.stdout:
        seen += line
        if ": warm-up (" in line:
            break
    assert ": warm-up (" in seen, seen
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=300)
    if hook_fails:
        assert proc.returncode != 0 and "TypeError: unsupported operand" in rest, seen + rest
    else:
        assert proc.returncode == 2 and "KeyboardInterrupt" in rest, seen + rest
    assert "bark performance gate" not in rest and not list((tmp_path / "results").glob("*/run.json")), rest


def test_a_run_in_which_nothing_could_run_is_kept_with_its_report_and_says_why(tmp_path):
    """Every selected configuration unavailable here: the run holds their reasons. Its report was not written
    (ZeroDivisionError drawing no benchmark) and the golden line blamed the fidelity check (2026-12-03)."""
    proc = bench(tmp_path, "--bark-configs", "bettertransformer")
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "report not written" not in output, output
    assert "golden fingerprint: not checked (no fp32 eager reference: nothing was measured)" in output, output
    (report,) = (tmp_path / "results").glob("*/report.md")
    text = report.read_text()
    assert "bettertransformer needs optimum<2.0" in text and "![latency]" not in text, text


def test_an_interrupted_run_is_judged_on_what_it_measured_and_never_adopted_or_remeasured(run, work):
    """Ctrl-C after bs1 took its rounds: bs1 is judged (noisy here), bs8 reads "not run" because of the interrupt,
    not lost or "not selected"; the baseline stays as it was and nothing spends time re-measuring."""
    before = baseline_file(work).read_bytes()
    cut = scaled(run, "latency_s", 1.02)
    cut.results = [r for r in cut.results if r.id == "bs1-fp32"]
    cut.mark_interrupted("interrupted in invocation 1 of 1: its rounds so far are kept")

    def measure_more(ids: list[str]) -> RunRecord:
        raise AssertionError(f"an interrupted run was re-measured: {ids}")

    done, text = gate(cut, work, measure_more, save_baseline=True, remeasure_s=120.0)
    assert done.lines[0].text.startswith("INTERRUPTED (interrupted in invocation 1 of 1: its rounds so far are kept)")
    assert done.lines[0].red and done.exit_code == EXIT_REGRESSION, text
    assert "NOISY" in row(text, "bs1-fp32")
    assert "\nnot run, the run was cut short before it measured this: bs8-fp32\n" in text, text
    assert "noisy benchmarks not re-measured: an interrupted run cannot be measured again here" in text
    assert "baseline NOT updated: the run failed (interrupted in invocation 1 of 1" in text
    assert baseline_file(work).read_bytes() == before
    assert done.kept is not None and store.load(done.kept).interrupted == cut.interrupted  # kept, and says so


def test_unusable_thresholds_stop_the_gate_naming_the_key(run, work):
    bad = work / "pyproject.toml"
    bad.write_text("[tool.bark-perf.thresholds]\ntiem = 0.3\n")
    how = Finish(choices=CHOICES, baselines_dir=work / "baselines", pyproject=bad)
    done = finish(run, how)
    assert done.exit_code == EXIT_BAD_THRESHOLDS
    said = [line.text for line in done.lines]
    assert any(t.startswith("gate not run: ") and "unknown key 'tiem'" in t for t in said), said
    assert not any(t == NOT_ASKED for t in said), said  # it was asked for: not a missing flag


def test_a_run_without_the_gate_says_how_to_ask_for_it_on_screen_and_in_the_summary(run, work):
    how = Finish(
        choices=replace(CHOICES, compare=False, markdown=work / "summary.md"),
        baselines_dir=work / "baselines",
        pyproject=ROOT / "pyproject.toml",
        results_dir=work / "results",
    )
    done = finish(run, how)
    assert done.exit_code == EXIT_OK and NOT_ASKED in [line.text for line in done.lines]
    assert NOT_ASKED in (work / "summary.md").read_text()
