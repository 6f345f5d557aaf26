"""gate-quality, the tool that measures the gate here: its scenarios run through the run loop and are judged by the
gate; unchanged runs can also be separate processes (what a user sees). Unambiguous injected faults only."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from perf_utils.bark.checkpoints import Checkpoint
from perf_utils.gate.thresholds import Thresholds
from perf_utils.measure.run import Run, RunPlan
from perf_utils.record import store
from perf_utils.record.record import BenchmarkResult, RunRecord, Schedule
from perf_utils.tools.quality import (
    QualityInterrupted,
    alternating,
    cross_process,
    judged,
    measure_quality,
    quality_table,
)

# Wiring tests: only gross changes are called (a doubling), so this machine's noise never decides them; what the
# gate does at the project's thresholds is measured with gate-quality itself (README).
TH = Thresholds(time=1.0, throughput=1.0)


def test_scenarios_catch_a_4x_slowdown_and_a_256_mb_buffer(tiny_checkpoint: Checkpoint, torch_single_thread) -> None:
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=3, warmup=1)
    scenarios = measure_quality(plan, "fp32", [1], repeats=1, trials=1, slowdowns=[3.0], buffers_mb=[256])
    rows = judged(scenarios, TH)
    by_label = {r.label: r for r in rows}
    assert by_label["slowdown +300%"].flagged == 1 and by_label["slowdown +300%"].changes[0] > 1.0
    assert by_label["extra buffer 256 MB"].flagged == 1
    assert by_label["unchanged (false alarms)"].trials == 1
    table = quality_table(rows, TH)
    assert "| bs1     | slowdown +300%" in table and "1/1" in table


def test_interrupted_gate_quality_keeps_the_runs_it_finished(tiny_checkpoint: Checkpoint, torch_single_thread) -> None:
    """Ctrl-C (or a time limit's SIGINT) as the second unchanged run begins: the first is kept and judged; cut while
    the reference is measured, there is nothing to judge and the interrupt goes on as it is."""
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=2, warmup=1)

    def ctrl_c_at(marker: str):
        def progress(line: str) -> None:
            if marker in line:
                raise KeyboardInterrupt

        return progress

    with pytest.raises(QualityInterrupted) as cut:
        measure_quality(plan, "fp32", [1], repeats=3, trials=1, slowdowns=[3.0], buffers_mb=[],
                        progress=ctrl_c_at("unchanged (false alarms): run 2/3"))  # fmt: skip
    rows = {r.label: r for r in judged(cut.value.scenarios, TH)}
    assert rows["unchanged (false alarms)"].trials == 1 and not any("slowdown" in label for label in rows), rows
    with pytest.raises(KeyboardInterrupt) as plain:
        measure_quality(plan, "fp32", [1], repeats=1, trials=0, slowdowns=[], buffers_mb=[],
                        progress=ctrl_c_at("run 1/1"))  # fmt: skip
    assert type(plain.value) is KeyboardInterrupt  # nothing was finished, so nothing is kept


def test_gate_quality_interrupted_prints_what_it_finished_and_exits_130(
    tiny_checkpoint: Checkpoint, capsys, monkeypatch
) -> None:
    from perf_utils import cli
    from perf_utils.measure import run as run_module

    def progress(line: str) -> None:
        if "run 2/2" in line:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "stderr_progress", progress)
    monkeypatch.setenv("BARK_PERF_CHECKPOINT", str(tiny_checkpoint.path))
    argv = ["gate-quality", "--configs", "fp32", "--batch-sizes", "1", "--repeats", "2", "--trials", "0",
            "--slowdowns", "", "--buffers-mb", "", "--invocations", "1", "--rounds", "2", "--tokens", "8",
            "--device", "cpu"]  # fmt: skip
    assert cli.main(argv) == cli.EXIT_INTERRUPTED
    out = capsys.readouterr().out
    assert out.startswith("INTERRUPTED: the runs finished before it, judged; gate quality for fp32")
    # one run judged; at the project's 15% its verdict is this machine's noise (a cold first run read -34%)
    assert re.search(r"\| bs1 +\| unchanged \(false alarms\) +\| +[01]/1 ", out), out


def test_unchanged_runs_in_separate_processes_are_judged_against_the_first(
    tiny_checkpoint: Checkpoint, tmp_path
) -> None:
    args = ["--checkpoint", str(tiny_checkpoint.path), "--device", "cpu", "--tokens", "8", "--rounds", "3",
            "--warmup", "1", "--invocations", "1"]  # fmt: skip
    [row] = judged(cross_process(args, "fp32", [1], 1, tmp_path), TH)[:1]
    assert row.label == "unchanged, separate `run` processes (false alarms)"
    assert row.trials == 1 and row.flagged == 0  # a cross-process A/A: no gross change
    assert len(list((tmp_path / "results").glob("*/run.json"))) == 2  # each process kept its run


def test_the_same_runs_are_judged_at_each_time_threshold_asked_for(
    tiny_checkpoint: Checkpoint, capsys, monkeypatch, tmp_path
) -> None:
    from perf_utils import cli

    monkeypatch.setenv("BARK_PERF_CHECKPOINT", str(tiny_checkpoint.path))
    kept = tmp_path / "runs.json"
    argv = ["gate-quality", "--configs", "fp32", "--batch-sizes", "1", "--repeats", "1", "--trials", "0",
            "--slowdowns", "", "--buffers-mb", "", "--invocations", "1", "--rounds", "2", "--tokens", "8",
            "--device", "cpu", "--time-thresholds", "0.1,1.0", "--reference-invocations", "2",
            "--json", str(kept)]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    # the runs kept with --json are judged again without measuring, to the same tables
    assert cli.main(["gate-quality", "--from", str(kept), "--time-thresholds", "0.1,1.0"]) == 0
    assert capsys.readouterr().out == out
    # options that would measure do not apply to runs measured before: refused by name, nothing judged
    assert cli.main(["gate-quality", "--from", str(kept), "--rounds", "6", "--device", "cpu"]) == 2
    err = capsys.readouterr()
    assert "apply only to measuring: --device, --rounds (drop them" in err.err and not err.out
    kept.write_text("{}")
    assert cli.main(["gate-quality", "--from", str(kept)]) == 2
    assert f"error: --from {kept}: not a gate-quality file written by --json" in capsys.readouterr().err
    assert "2 interleaved rounds per benchmark in this process" in out
    # the reference stands for a saved baseline: taken in its own number of worker processes
    assert "each run compared with one reference run (taken in 2 worker processes, as a saved baseline is)" in out
    assert re.search(r"latency CV of the reference rounds: [\d.]+%, 2 invocations", out), out
    assert len(re.findall(r"\| bs1 +\| unchanged \(false alarms\) +\|", out)) == 2
    probe_row = r"\| bs1 +\| unchanged \(false alarms\), latency / host probe \(the setting here\) +\|"
    assert len(re.findall(probe_row, out)) == 2  # pyproject judges the CPU per host probe
    assert "thresholds: time 10%, throughput 10%" in out and "thresholds: time 100%, throughput 100%" in out
    assert "the machine's drift 5% in time intervals" in out  # pyproject's CPU drift widens what they judge


def test_compare_stacks_paired_gate_is_measured_in_alternating_sessions(
    tiny_checkpoint: Checkpoint, capsys, monkeypatch
) -> None:
    """`--stacks`: compare-stacks' own schedule with this stack on both sides, the fault on the candidate only."""
    from perf_utils import cli

    monkeypatch.setenv("BARK_PERF_CHECKPOINT", str(tiny_checkpoint.path))
    argv = ["gate-quality", "--configs", "fp32", "--batch-sizes", "1", "--stacks", "1", "--trials", "1",
            "--slowdowns", "0.5", "--invocations", "1", "--rounds", "2", "--tokens", "8",
            "--device", "cpu"]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "each session's candidate judged against its own pinned side, paired" in out
    assert re.search(r"\| bs1 +\| compare-stacks: same stack on both sides \(false alarms\) +\|", out), out
    # paired sessions are judged per host probe too (each side's rounds by its own worker's probe)
    assert "| compare-stacks: same stack on both sides (false alarms), latency / host probe " in out
    assert "(the setting here)" not in out  # the gate judges a paired session on its trials' ratios, not per probe
    row = next(line for line in out.splitlines() if "compare-stacks: candidate +50% slower" in line)
    assert "| 1/1 " in row, out


def test_remeasure_adds_invocations_to_a_run_the_gate_calls_noisy_and_the_table_counts_them(
    tiny_checkpoint: Checkpoint, torch_single_thread
) -> None:
    """`--remeasure-noisy`: against a reference far too wide to decide (rounds from 0.1x to 10x), the run is
    re-measured within the budget, as `--bark-remeasure-noisy` would, and the table says how often."""
    from perf_utils.bark import configs
    from perf_utils.measure.run import Case, Run
    from perf_utils.record.record import BenchmarkResult
    from perf_utils.tools.quality import QualityRow, Remeasure, _remeasured

    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=2, warmup=1)
    run = Run(plan, check_fidelity=False)
    case = Case(configs.get("fp32"), 1)
    measured = run.measure_all([case]).by_id()[case.id]
    wide = [measured.median("latency_s") * f for f in (0.1, 10.0, 0.2, 8.0)]
    reference = BenchmarkResult("fp32", 1, "ok", rounds=[{"latency_s": v, "throughput_sps": 1 / v} for v in wide])
    result, added = _remeasured(run, case, reference, plan.invocations == 1, Remeasure(6.0, Thresholds()))
    run.release()
    assert added >= 1 and result.invocations is not None and max(result.invocations) == added
    assert len(result.rounds) == 2 * (1 + added)
    row = QualityRow("unchanged (false alarms)", 1, trials=2, changes=[0.0, 0.0], added=[added, 0])
    assert f"1 runs, +{added} invocations" in quality_table([row], TH)


def test_runs_that_were_remeasured_are_also_judged_as_first_measured() -> None:
    """The table's "before re-measuring" row judges the same runs without the invocations re-measuring added."""
    from perf_utils.record.record import BenchmarkResult
    from perf_utils.tools.quality import Scenario

    def result(levels):
        rounds = [{"latency_s": v, "throughput_sps": 1 / v} for v in levels for _ in range(2)]
        return BenchmarkResult(
            "fp32", 1, "ok", rounds=rounds, invocations=[i for i in range(len(levels)) for _ in "ab"]
        )

    reference = result([1.0, 1.01, 0.99])
    # 3 invocations as first measured, one of them 8x slow (noisy at any threshold), then 6 more at 1.0
    remeasured = result([1.0, 8.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    sc = Scenario("unchanged (false alarms)", 1, "any", reference, [remeasured], added=[6])
    before, after = judged([sc], Thresholds())[:2]
    assert before.label == "unchanged (false alarms), before re-measuring" and before.noisy == 1
    assert after.noisy == 0 and after.flagged == 0 and after.added == [6]


def test_host_peaks_measured_in_unlike_processes_are_not_judged_and_the_table_says_so(tmp_path) -> None:
    """A stored baseline from worker processes against runs in the calling process (`--invocations 1`): what else a
    process holds moves an RSS rise, so gate-quality judges such pairs as the gate does, not judging the peak / fp32
    of a record that has only RSS rises (no host allocations), and says so; the reason is kept with the runs for
    `--from`. Alike, a +70% peak / fp32 is still a false alarm."""
    from perf_utils.tools.quality import QualityRuns, Scenario

    def result(peak: float) -> BenchmarkResult:
        rounds = [{"latency_s": v, "throughput_sps": 1 / v, "host_peak_mb": peak, "peak_vs_fp32": peak / 40}
                  for v in (1.0, 1.01, 0.99, 1.0)]  # fmt: skip
        return BenchmarkResult("bf16", 1, "ok", rounds=rounds, invocations=[0, 0, 1, 1])

    why = "worker processes in the baseline, the calling process now"
    unlike = Scenario("unchanged (false alarms)", 1, "any", result(20.0), [result(34.0)], unlike=why)
    alike = Scenario("unchanged (false alarms)", 1, "any", result(20.0), [result(34.0)])
    rows = judged([unlike], TH)
    assert (rows[0].flagged, rows[0].trials) == (0, 1)
    assert f"(RSS rises, and peaks / fp32 of them, not judged: {why})" in [r.label for r in rows]
    assert judged([alike], TH)[0].flagged == 1
    QualityRuns("h", "cpu", [unlike]).save(tmp_path / "runs.json")
    [again] = QualityRuns.load(tmp_path / "runs.json").scenarios
    assert again.unlike == why and judged([again], TH)[0].flagged == 0
    # gzipped, as docs/ keeps them: read as they are
    (tmp_path / "runs.json.gz").write_bytes(gzip.compress((tmp_path / "runs.json").read_bytes()))
    assert QualityRuns.load(tmp_path / "runs.json.gz").scenarios == [again]


def test_re_measuring_sees_where_the_reference_was_measured(monkeypatch) -> None:
    """`--remeasure-noisy` judges each run as the table will: against a reference from worker processes, a run in
    the calling process has its host peak not judged, so a peak moved by the process cannot end the re-measuring."""
    from types import SimpleNamespace

    from perf_utils.gate.compare import NOT_JUDGED, REGRESSED
    from perf_utils.tools import quality

    def result(peak: float) -> BenchmarkResult:
        rounds = [{"latency_s": 1.0, "throughput_sps": 1.0, "host_peak_mb": peak}] * 4
        return BenchmarkResult("fp32", 1, "ok", rounds=rounds, invocations=[0, 0, 1, 1])

    seen: list[Any] = []

    def remeasure(record, outcome, gate, measure_more, budget_s):
        seen.append(outcome.comparison.verdicts[0].metric("host_peak_mb").verdict)
        return SimpleNamespace(record=record, invocations=0)

    monkeypatch.setattr(quality, "remeasure_noisy", remeasure)
    now = RunRecord("hw", "cpu", {"key": "tiny"}, {}, {}, [result(34.0)], schedule=Schedule(invocations=1))
    run, case = SimpleNamespace(record=now, measure_more=None), SimpleNamespace(id="bs1-fp32")
    how = quality.Remeasure(60, TH)
    quality._remeasured(run, case, result(20.0), False, how)  # the reference from worker processes
    quality._remeasured(run, case, result(20.0), True, how)  # the reference from the calling process, as the runs
    assert seen == [NOT_JUDGED, REGRESSED]


def test_runs_can_be_judged_against_the_stored_baseline_taken_in_another_session(
    tiny_checkpoint: Checkpoint, capsys, monkeypatch, tmp_path
) -> None:
    """`--reference-baseline DIR`: the reference is the baseline `--benchmark-compare` would find for this machine,
    kept with the runs (`--from` judges them again); a missing or incomparable one is refused by name. A lane of
    several configurations is measured as it runs: the first judged, the others beside it in every run."""
    from perf_utils import cli

    monkeypatch.setenv("BARK_PERF_CHECKPOINT", str(tiny_checkpoint.path))
    common = ["--configs", "fp32,bf16", "--batch-sizes", "1", "--invocations", "1", "--rounds", "2", "--device", "cpu"]
    stored = tmp_path / "baselines"
    save = ["run", *common, "--tokens", "8", "--no-fidelity", "--save-baseline", "--baselines-dir", str(stored),
            "--results-dir", str(tmp_path / "results")]  # fmt: skip
    assert cli.main(save) == 0
    [path] = stored.glob("*/*.json")
    kept = tmp_path / "runs.json"
    quality = ["gate-quality", *common, "--repeats", "1", "--trials", "1", "--slowdowns", "3.0", "--buffers-mb", "",
               "--reference-baseline", str(stored), "--time-thresholds", "1.0"]  # fmt: skip
    capsys.readouterr()
    measured: list[list[str]] = []
    real = Run.measure_all
    spy = lambda run, cases: measured.append([c.id for c in cases]) or real(run, cases)  # noqa: E731
    monkeypatch.setattr(Run, "measure_all", spy)
    assert cli.main([*quality, "--tokens", "8", "--json", str(kept)]) == 0
    out = capsys.readouterr().out
    assert ", cpu, measured beside bf16 (unchanged, interleaved): " in out
    assert f"each run compared with the stored baseline in {stored} for this machine" in out
    assert measured == [["bs1-fp32", "bs1-bf16"]] * 2  # the unchanged run and the slowed one, each beside bf16
    assert re.search(r"\| bs1 +\| slowdown \+300% +\| 1/1 ", out), out
    rounds = [r["latency_s"] for r in store.load(path).by_id()["bs1-fp32"].rounds]
    [reference] = {json.dumps(sc["reference"]["rounds"]) for sc in json.loads(kept.read_text())["scenarios"]}
    assert [r["latency_s"] for r in json.loads(reference)] == rounds  # the stored rounds, not new ones
    said = "RSS rises, and peaks / fp32 of them, not judged"
    assert said not in out  # the baseline was measured in this process too, as the runs are
    # a baseline measured in worker processes (as `--bark-save-baseline` takes one), runs in the calling process
    data = json.loads(path.read_text())
    data["schedule"]["workers"] = "forked from the zygote"
    path.write_text(json.dumps(data))
    assert cli.main([*quality[:-4], "--trials", "0", "--reference-baseline", str(stored), "--tokens", "8"]) == 0
    why = "worker processes in the baseline, the calling process now"
    assert f"({said}: {why})" in capsys.readouterr().out
    # another workload than the baseline's (16 tokens): refused, naming the file and the difference
    assert cli.main([*quality, "--tokens", "16"]) == 2
    err = capsys.readouterr().err
    assert f"--reference-baseline: {path} cannot be compared: workload differs: n_tokens 8 -> 16" in err, err
    assert cli.main([*quality, "--tokens", "8", "--reference-invocations", "2"]) == 2
    assert "cannot be combined with --reference-invocations" in capsys.readouterr().err
    assert cli.main(["gate-quality", *common, "--stacks", "1", "--tokens", "8"]) == 2
    assert "--stacks measures one configuration" in capsys.readouterr().err
    assert cli.main([*quality[:-4], "--reference-baseline", str(tmp_path / "none"), "--tokens", "8"]) == 2
    assert f"no baseline {tmp_path / 'none'}" in capsys.readouterr().err


def _record(latency: float) -> RunRecord:
    rounds = [{"latency_s": latency * f, "throughput_sps": 1 / (latency * f)} for f in (1.0, 1.01, 0.99)]
    return RunRecord("hw", "cpu", {"key": "tiny"}, {}, {}, [BenchmarkResult("fp32", 1, "ok", rounds=rounds)])


def _cut_at(call: int, one: Callable[..., Any]) -> Callable[..., Any]:
    """A stand-in for a measuring call: what `one(k, *args)` gives for calls k = 1, 2, ..., Ctrl-C at call `call`."""
    calls = [0]

    def fake(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == call:
            raise KeyboardInterrupt
        return one(calls[0], *args)

    return fake


def test_an_interrupted_cross_process_a_a_judges_the_processes_that_finished(monkeypatch, tmp_path) -> None:
    """`--processes`: Ctrl-C in the fourth `run` process keeps the first (the reference) and two judged against it;
    cut in the second, no unchanged run finished and the interrupt goes on as it is."""
    import subprocess

    from perf_utils.tools import quality

    def one(k: int, *_: Any) -> subprocess.CompletedProcess[str]:
        (tmp_path / f"process-{k - 1}.json").write_text(json.dumps(_record(1.0 + k / 100).to_dict()))
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(quality.subprocess, "run", _cut_at(4, one))
    with pytest.raises(QualityInterrupted) as cut:
        cross_process([], "fp32", [1], 5, tmp_path)
    [scenario] = cut.value.scenarios
    assert len(scenario.runs) == 2 and scenario.reference.median("latency_s") == 1.01
    [row] = judged([scenario], TH)[:1]
    assert row.trials == 2 and row.flagged == 0
    monkeypatch.setattr(quality.subprocess, "run", _cut_at(2, one))
    with pytest.raises(KeyboardInterrupt) as plain:
        cross_process([], "fp32", [1], 5, tmp_path)
    assert type(plain.value) is KeyboardInterrupt


def test_an_interrupted_stacks_session_run_judges_the_sessions_that_finished(
    tiny_checkpoint: Checkpoint, monkeypatch
) -> None:
    """`--stacks 3 --trials 1 --slowdowns 0.5`: Ctrl-C in the third session keeps the two unchanged sessions
    (no slowdown scenario: none of its sessions finished); cut in the first, the interrupt goes on as it is."""
    from perf_utils.measure import alternate

    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=2, warmup=1)

    def one(k: int, *_: Any) -> dict[str, RunRecord]:
        return {"pinned": _record(1.0), "candidate": _record(1.0 + k / 100)}

    monkeypatch.setattr(alternate, "alternate", _cut_at(3, one))
    with pytest.raises(QualityInterrupted) as cut:
        alternating(plan, "fp32", [1], sessions=3, trials=1, slowdowns=[0.5])
    [scenario] = cut.value.scenarios
    assert scenario.label == "compare-stacks: same stack on both sides (false alarms)"
    assert len(scenario.runs) == len(scenario.references) == 2
    monkeypatch.setattr(alternate, "alternate", _cut_at(1, one))
    with pytest.raises(KeyboardInterrupt) as plain:
        alternating(plan, "fp32", [1], sessions=3, trials=1, slowdowns=[0.5])
    assert type(plain.value) is KeyboardInterrupt


def test_gate_quality_cut_in_its_separate_processes_prints_them_beside_the_runs_before(
    tiny_checkpoint: Checkpoint, capsys, monkeypatch
) -> None:
    """`--processes 3`, Ctrl-C in the third `run` process: the in-process runs and the two processes that finished
    are judged and printed, and the exit status is 130."""
    import subprocess

    from perf_utils import cli
    from perf_utils.tools import quality

    def one(_: int, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        Path(cmd[cmd.index("--json") + 1]).write_text(json.dumps(_record(1.0).to_dict()))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(quality.subprocess, "run", _cut_at(3, one))
    monkeypatch.setenv("BARK_PERF_CHECKPOINT", str(tiny_checkpoint.path))
    argv = ["gate-quality", "--configs", "fp32", "--batch-sizes", "1", "--repeats", "1", "--trials", "0",
            "--slowdowns", "", "--buffers-mb", "", "--processes", "3", "--invocations", "1", "--rounds", "2",
            "--tokens", "8", "--device", "cpu"]  # fmt: skip
    assert cli.main(argv) == cli.EXIT_INTERRUPTED
    out = capsys.readouterr().out
    assert out.startswith("INTERRUPTED: the runs finished before it, judged; gate quality for fp32")
    # one run judged; at the project's 15% its verdict is this machine's noise (a cold first run read -34%)
    assert re.search(r"\| bs1 +\| unchanged \(false alarms\) +\| +[01]/1 ", out), out
    assert re.search(r"\| bs1 +\| unchanged, separate `run` processes \(false alarms\) +\| +0/1 ", out), out


def test_a_stage_slowdown_fault_names_its_stage_or_lists_the_stages():
    """`slowdown:F:STAGE` slows one of Bark's stages (the suite's own regressed run uses it to show the gate naming
    the stage); a stage that does not exist is an error that lists those that do."""
    from perf_utils.measure import faults

    assert callable(faults.parse("slowdown:0.5:coarse")) and callable(faults.parse("slowdown:0.5"))
    with pytest.raises(ValueError, match="no stage 'codex'; stages: semantic, coarse, fine, codec"):
        faults.parse("slowdown:0.5:codex")
