"""The report: built from a real tiny run of the suite (numbers checked against its JSON, figures opened), and
its parts on synthetic runs (a regressed benchmark is red; trends; the CLI's report and history)."""

import re
import statistics
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

from perf_utils import cli
from perf_utils.gate.compare import compare
from perf_utils.gate.decide import EXIT_REGRESSION
from perf_utils.gate.thresholds import Thresholds
from perf_utils.record import store
from perf_utils.record.metrics import HOST_ALLOC_PEAK, HOST_PROBE, INVOCATION_PROBE, STAGES
from perf_utils.record.record import BenchmarkResult, RunRecord
from perf_utils.report import markdown as report
from perf_utils.report import plots


def png_panels(path: Path) -> list[str]:
    """Open the PNG for real (decoding every pixel) and return the panel titles it says it shows."""
    with Image.open(path) as img:
        assert img.format == "PNG"
        img.load()
        assert img.width > 300 and img.height > 150
        return img.info["Description"].split(" | ")


def table_cells(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the first table under `heading`, as stripped cells."""
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("|")][2:]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]


def table_rows(markdown: str, heading: str) -> dict[str, list[str]]:
    """The same, keyed by the first cell."""
    return {c[0]: c[1:] for c in table_cells(markdown, heading)}


def median(result: BenchmarkResult, metric: str) -> float:
    return statistics.median(result.values(metric))


@pytest.fixture(scope="module")
def regressed_run(regressed) -> SimpleNamespace:
    """The shared real regressed run (conftest): a healthy baseline, then `fp32` about 4x slower (in its coarse
    stage) and `bf16` new."""
    assert regressed.proc.returncode == EXIT_REGRESSION, regressed.output
    return regressed


def test_report_folder_holds_the_run_report_and_figures(regressed_run):
    names = {p.name for p in regressed_run.folder.iterdir()}
    assert {"run.json", "report.md", "latency.png", "memory.png", "stages.png"} <= names
    assert f"report: {regressed_run.folder / 'report.md'}" in regressed_run.output  # the terminal says where


def test_report_leads_with_what_regressed(regressed_run):
    first_lines = regressed_run.markdown.split("## ", 1)[0]
    assert "**FAILED**" in first_lines
    assert "`bs1-fp32` (latency +" in first_lines and "`bs8-fp32` (latency +" in first_lines
    assert first_lines.count(", most in coarse: +") == 2, first_lines  # where the injected slowdown sat
    assert "throughput" not in first_lines  # it regressed too, but it is latency's rounds: said once
    verdicts = table_rows(regressed_run.markdown, "## Verdict against the stored baseline")
    assert "REGRESSED" in verdicts["bs1-fp32"] and "new" in verdicts["bs1-bf16"]


@pytest.mark.parametrize("batch_size", [1, 8])
def test_blog_tables_equal_the_run_json(regressed_run, batch_size):
    rows = table_rows(regressed_run.markdown, f"## Batch {batch_size}:")
    results = regressed_run.record.by_id()
    base = results[f"bs{batch_size}-fp32"]
    assert set(rows) == {"fp32", "bf16"}
    for config, cells in rows.items():
        r = results[f"bs{batch_size}-{config}"]
        latency, vs_lat, peak, vs_peak, sps, vs_sps, fidelity, gate = cells
        assert latency == f"{median(r, 'latency_s'):.3f}"
        assert peak == f"{median(r, HOST_ALLOC_PEAK):.1f}"  # counted, the gated host figure (not the RSS rise)
        assert sps == f"{median(r, 'throughput_sps'):.2f}"
        if config == "bf16":  # latency and peak: the median of the per-trial ratios stored in the rounds
            assert vs_lat == f"{median(r, 'latency_vs_fp32') - 1:+.0%}"
            assert vs_peak == f"{median(r, 'peak_vs_fp32') - 1:+.0%}"
            assert vs_sps == f"{median(r, 'throughput_sps') / median(base, 'throughput_sps') - 1:+.0%}"
            assert "new" in gate
        else:
            assert vs_lat == vs_peak == vs_sps == "—"
            assert "REGRESSED" in gate
        assert fidelity.startswith("ok")


def test_stage_table_equals_the_run_json(regressed_run):
    rows = table_rows(regressed_run.markdown, "## Where the time goes")
    for bid, r in regressed_run.record.by_id().items():
        stages = [median(r, f"stage_{s}_s") for s in STAGES]
        cells = rows[bid]
        for cell, value in zip(cells[:-1], stages, strict=True):
            assert cell.strip("*").startswith(f"{value:.3f} ("), (bid, cells)  # bold: the stage that moved most
        assert cells[-1] == f"{sum(stages):.3f}"


def test_figures_are_valid_images_with_the_expected_panels(regressed_run):
    folder = regressed_run.folder
    assert png_panels(folder / "latency.png") == ["latency, batch 1", "latency, batch 8"]
    assert png_panels(folder / "memory.png") == [
        "host allocations peak, batch 1",
        "host allocations peak, batch 8",
    ]
    assert png_panels(folder / "stages.png") == ["per-stage time, batch 1", "per-stage time, batch 8"]
    assert png_panels(folder / "batching.png") == ["throughput by batch size"]  # the blog's batching question
    for name in ("latency.png", "memory.png", "stages.png", "batching.png"):
        assert f"({name})" in regressed_run.markdown
    sweep = table_rows(regressed_run.markdown, "## Throughput by batch size")  # the same question, as numbers
    for config in ("fp32", "bf16"):
        one, eight = (regressed_run.record.by_id()[f"bs{bs}-{config}"] for bs in (1, 8))
        gain = median(eight, "throughput_sps") / median(one, "throughput_sps") - 1
        assert sweep[config][1] == f"{median(eight, 'throughput_sps'):.2f} ({gain:+.0%})", sweep


def test_job_summary_gets_the_report_without_local_images(regressed_run):
    summary = regressed_run.summary
    assert "**FAILED**" in summary and "| bs1-fp32" in summary and "## Batch 8:" in summary
    assert "![" not in summary and str(regressed_run.folder) in summary


def test_history_counts_both_runs(regressed_run):
    assert "2 comparable run(s) kept; trends are called from 4." in regressed_run.markdown


def test_progress_names_the_benchmark_the_round_and_the_time_left(regressed_run):
    output = regressed_run.output
    assert re.search(r"bs1-fp32: warm-up \(until steady: 2 to 10 calls\)", output), output
    # a warm-up is said once as it starts, then only for a call past the least, with why: not a line per call
    for r in regressed_run.record.measured():
        starts = re.findall(rf"{r.id}: warm-up \(until steady", output)
        assert len(starts) == len(set(r.invocations or [0])), (r.id, output)
        more = re.findall(rf"{r.id}: warm-up call (\d+) of at most 10 \(still getting faster\)", output)
        assert len(more) == len(re.findall(rf"{r.id}: warm-up call", output)) and all(int(k) > 2 for k in more)
    assert re.search(r"bs8-bf16: round 1/2, ~\d+s left in the run", output), output
    assert re.search(r"bs1-fp32: round 2/2, ~\d+s left in the run", output), output
    assert "loading bf16 (tiny)" in output


# --- the parts, on synthetic runs --------------------------------------------------------------------------------


def synthetic(created: str, latency: dict[str, float], peak: float = 20.0) -> RunRecord:
    results = []
    for config, lat in latency.items():
        for bs in (1, 8):
            rounds = [
                {
                    "latency_s": lat * bs**0.5 * f,
                    "host_peak_mb": peak * bs,
                    "throughput_sps": bs / (lat * bs**0.5 * f),
                    **{f"stage_{s}_s": lat * bs**0.5 * f / 4 for s in STAGES},
                }
                for f in (0.98, 0.99, 1.0, 1.01, 1.02)
            ]
            results.append(BenchmarkResult(config, bs, "ok", rounds=rounds))
    results.append(BenchmarkResult("cpu_offload", 1, "unavailable", "cpu_offload needs an accelerator; none found"))
    workload = {"n_tokens": 32, "prompts_sha256": "p", "seed": 0, "sampling": {}}
    return RunRecord("hw", "cpu", {"key": "tiny", "kind": "tiny"}, workload, {}, results, created=created)


def test_regressed_and_lost_benchmarks_are_red_in_the_figure():
    base = synthetic("2026-11-01T00:00:00+00:00", {"fp32": 1.0, "bf16": 2.0, "bettertransformer": 0.8})
    now = synthetic("2026-11-02T00:00:00+00:00", {"fp32": 1.0, "bf16": 6.0})
    why = "bettertransformer needs optimum<2.0"
    now.results += [BenchmarkResult("bettertransformer", bs, "unavailable", why) for bs in (1, 8)]
    comparison = compare(base, now, Thresholds())
    fig = plots.spread_figure(now, "latency_s", base, comparison)
    red = plots.COLOURS["regressed"]
    for ax in fig.axes[:2]:
        colours = {t.get_text(): t.get_color() for t in ax.get_yticklabels()}
        assert colours == {"fp32": "black", "bf16": red, "bettertransformer": red}
        labels = [t.get_text().strip() for t in ax.texts]
        assert "LOST" in labels and any(label.endswith("REGRESSED") for label in labels)


def on_host(record: RunRecord, slower: float) -> RunRecord:
    """`record` as measured on a host `slower` times as slow for every program, its probes with it."""
    times = ("latency_s", *(f"stage_{s}_s" for s in STAGES))
    for r in record.results:
        r.rounds = [{**x, **{t: x[t] * slower for t in times}, "throughput_sps": x["throughput_sps"] / slower,
                     HOST_PROBE: 0.02 * slower, INVOCATION_PROBE: 0.02 * slower} for x in r.rounds]  # fmt: skip
    return record


def test_the_latency_figure_draws_time_as_the_gate_judged_it(tmp_path, monkeypatch):
    """Seen 2026-12-03: judged per host probe, bs8-fp16 read -2.7% in the table and 36% slower in the figure, which
    drew the rounds as measured on a host 33% slower. Per probe, the figure draws seconds at the baseline's speed."""
    from perf_utils.gate.decide import GateOptions, judge

    base = on_host(synthetic("2026-11-01T00:00:00+00:00", {"fp32": 1.0}), 1.0)
    now = on_host(synthetic("2026-11-02T00:00:00+00:00", {"fp32": 1.0}), 1.4)  # Bark unchanged, the host slower
    drawn = {}
    monkeypatch.setattr(plots, "save", lambda fig, path: drawn.setdefault(path.name, fig) and path)
    for per_probe, now_over_base in ((True, 1.0), (False, 1.4)):
        outcome = judge(base, now, GateOptions(tmp_path, Thresholds(), per_host_probe=per_probe), "b.json")
        drawn.clear()
        report.write(tmp_path, now, outcome)
        ax = drawn["latency.png"].axes[0]
        bars = {round(b.get_y() + b.get_height() / 2, 1): b.get_width() for b in ax.patches}  # now at -0.2
        assert bars[-0.2] / bars[0.2] == pytest.approx(now_over_base, rel=0.01), (per_probe, bars)
        assert ("baseline's host speed" in ax.get_xlabel()) == per_probe


def test_a_latency_change_names_the_stage_that_moved(tmp_path, monkeypatch):
    """Bark is four models: after "latency regressed" the question is which one. The coarse stage twice as slow
    (latency +25%) on a host 20% slower: judged per host probe, the row names coarse with Bark's own change
    (+0.250 s at the baseline's speed, not the +0.350 s measured), and the report's stage table gives every stage's
    change, coarse's in bold; an unchanged benchmark names none."""
    from perf_utils.gate.decide import GateOptions, judge
    from perf_utils.report.table import verdict_table

    monkeypatch.setattr(plots, "save", lambda fig, path: path)
    base = on_host(synthetic("2026-11-01T00:00:00+00:00", {"fp32": 1.0, "bf16": 1.0}), 1.0)
    now = synthetic("2026-11-02T00:00:00+00:00", {"fp32": 1.0, "bf16": 1.0})
    for r in now.results:
        if r.config == "bf16":  # at batch 1 in coarse; at batch 8 outside the stages (a sleep in generate)
            coarse = 2 if r.batch_size == 1 else 1
            r.rounds = [{**x, "stage_coarse_s": coarse * x["stage_coarse_s"], "latency_s": 1.25 * x["latency_s"]}
                        for x in r.rounds]  # fmt: skip
    outcome = judge(base, on_host(now, 1.2), GateOptions(tmp_path, Thresholds(), per_host_probe=True), "b.json")
    table = verdict_table(outcome.comparison)
    (row,) = [line for line in table.splitlines() if line.startswith("bs1-bf16")]
    assert "REGRESSED" in row and "most in coarse: +0.250 s, +100.0%" in row, table
    (row8,) = [line for line in table.splitlines() if line.startswith("bs8-bf16")]
    assert "outside the stages: the four moved +0.000 s of +0.707 s" in row8, table
    assert "most in" not in table.replace(row, "") and "the stages" not in table.replace(row8, "")
    written = report.write(tmp_path, now, outcome)
    text = written.markdown.read_text()
    assert "in bold, where latency changed, the stage that made most of it" in text
    assert "`bs1-bf16` (latency +25%, most in coarse: +0.250 s, +100.0%)" in text.split("\n\n")[1]  # the headline
    rows = table_rows(text, "## Where the time goes")
    assert rows["bs1-bf16"][:4] == ["0.300 (20%) +0%", "**0.600 (40%) +100%**", "0.300 (20%) +0%", "0.300 (20%) +0%"]
    assert not any("**" in cell for bid, cells in rows.items() if bid != "bs1-bf16" for cell in cells)  # nor bs8


def test_the_report_shows_what_each_verdict_not_unchanged_was_built_from(tmp_path, monkeypatch):
    """Why is a benchmark noisy? Answered in the report, not by reading two run.json files: for each benchmark not
    unchanged, each side's invocations (a baseline's sessions apart) and whether they differ beyond their rounds
    (the interval then widened), every metric's change, interval and verdict, the drift counted. None for an
    unchanged benchmark; a paired comparison says its change is the trials' ratios."""
    from perf_utils.gate.decide import GateOptions, judge
    from perf_utils.report import details

    monkeypatch.setattr(plots, "save", lambda fig, path: path)

    def result(config: str, levels: list[float], sessions: list[int] | None = None) -> BenchmarkResult:
        stages = {f"stage_{s}_s": 0.25 for s in STAGES}
        rounds = [{"latency_s": lvl * f, "host_peak_mb": 20.0, "throughput_sps": 1 / (lvl * f), **stages}
                  for lvl in levels for f in (0.99, 1.01)]  # fmt: skip
        labels = [i for i in range(len(levels)) for _ in (0.99, 1.01)]
        in_session = [sessions[i] for i in labels] if sessions else None
        return BenchmarkResult(config, 1, "ok", rounds=rounds, invocations=labels, sessions=in_session)

    def record(results: list[BenchmarkResult]) -> RunRecord:
        workload = {"n_tokens": 32, "prompts_sha256": "p", "seed": 0, "sampling": {}}
        return RunRecord("hw", "cpu", {"key": "tiny", "kind": "tiny"}, workload, {}, results, created="2026-11-02")

    base = record([result("fp32", [1.0, 1.0, 1.0]), result("bf16", [1.0, 1.01, 0.99, 1.0], sessions=[0, 0, 1, 1])])
    now = record([result("fp32", [1.0, 1.0, 1.0]), result("bf16", [1.3, 1.6, 1.9])])  # levels far apart
    outcome = judge(base, now, GateOptions(tmp_path, Thresholds()), "b.json")
    verdict = outcome.comparison.verdicts[1]
    assert verdict.id == "bs1-bf16" and verdict.verdict != "unchanged"
    text = report.write(tmp_path, now, outcome).markdown.read_text()
    section = text.split(details.HEADING, 1)[1]
    assert f"<summary><code>bs1-bf16</code>: {verdict.verdict}</summary>" in section
    assert "<code>bs1-fp32</code>" not in section  # unchanged: nothing to explain
    block = section.split("</details>", 1)[0]
    rows = {
        c[0]: c[1:]
        for ln in block.splitlines()
        if ln.startswith("| ")
        for c in [[x.strip() for x in ln.strip("|").split("|")]]
    }
    assert rows["baseline"][:2] == ["4 x 2", "session 1: 1, 1.01; session 2: 0.99, 1"]
    widened = "differ beyond their rounds (F test at 0.001); interval widened as Student's t over 3"
    assert rows["now"] == ["3 x 2", "1.3, 1.6, 1.9", widened]
    latency = verdict.metric("latency_s")
    assert rows["latency"] == ["s", "0.9999", "1.6", "+60.0%", latency.interval, latency.verdict]  # medians of rounds
    assert rows["coarse"][-1] == "not gated"
    assert "drift between sessions" in section and "the baseline's 2 sessions" in section

    paired = details.block(verdict, base.results[1], now.results[1], replace(outcome.comparison, paired=True), False)
    assert "paired change (median of the trials' ratios)" in paired and "resampled over invocations" in paired
    # what a paired change is built from: each trial's ratio by invocation, and whether those differ beyond trials
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in paired.splitlines() if line.startswith("| ")]
    assert ["latency now / base, per trial", "3 x 2", "1.3, 1.584, 1.919", widened] in cells, paired


def test_trend_figures_and_table_appear_once_the_history_is_long_enough(tmp_path):
    runs = tmp_path / "results"
    for day in range(1, 8):
        slow = 3.0 if day >= 5 else 1.0  # bf16 got 3x slower from the 5th night on
        store.keep_run(runs, synthetic(f"2026-11-0{day}T02:00:00+00:00", {"fp32": 1.0, "bf16": slow}))
    kept, _ = store.kept_runs(runs)
    latest = kept[-1].record
    written = report.write(kept[-1].path.parent, latest, None, kept)
    assert png_panels(written.figures["latency trend"]) == ["fp32", "bf16  REGRESSED"]
    assert (kept[-1].path.parent / "trend-memory.png").exists()
    called = table_cells(written.text, "## History")
    why = "stepped +200.0% on 2026-11-05, held for 3 runs; spread over the stages: the four moved +2.000 s of +2.000 s"
    assert ["🔴 REGRESSED", "bs1-bf16", "latency_s", why] in called  # every stage 3x slower: spread over the four
    assert {row[1] for row in called} == {"bs1-bf16", "bs8-bf16"}  # throughput too, nothing about `fp32`
    assert table_rows(written.text, "## Not measured")["cpu_offload"] == [
        "unavailable: cpu_offload needs an accelerator; none found"
    ]


def test_the_history_says_it_reads_time_per_host_probe_where_the_gate_does(tmp_path):
    """Four nights, the host 30% slower for every program on the last two: per host probe (the CPU's thresholds)
    the report calls nothing and says how it read time, in its text and the trend figure's title; asked to read
    time as measured, it calls the host's step."""
    runs = tmp_path / "results"
    for day in range(1, 5):
        run = synthetic(f"2026-11-0{day}T02:00:00+00:00", {"fp32": 1.0 if day < 3 else 1.3})
        for r in run.results:
            for rnd in r.rounds:
                rnd[INVOCATION_PROBE] = rnd[HOST_PROBE] = 0.01 if day < 3 else 0.013
        store.keep_run(runs, run)
    kept, _ = store.kept_runs(runs)
    latest, folder = kept[-1].record, kept[-1].path.parent
    cpu = Thresholds(time_per_host_probe=True)
    written = report.write(folder, latest, None, kept, thresholds=cpu)
    assert "No step, drift or outlier beyond the thresholds." in written.text
    assert "Latency and throughput per host probe, as the gate judges time here" in written.text
    with Image.open(written.figures["latency trend"]) as img:
        assert img.info["Title"].startswith("latency per host probe over the kept runs")
    written = report.write(folder, latest, None, kept, thresholds=cpu, per_host_probe=False)
    assert "per host probe" not in written.text
    assert "bs1-fp32" in [cells[1] for cells in table_cells(written.text, "## History")]


def test_what_did_not_run_is_a_row_per_reason_naming_every_configuration_it_stopped(tmp_path):
    run = synthetic("2026-11-01T00:00:00+00:00", {"fp32": 1.0})
    offload = "cpu_offload needs an accelerator; none found"
    run.results += [BenchmarkResult("offload+fp16", bs, "unavailable", offload) for bs in (1, 8)]
    run.results += [BenchmarkResult("bf16", 8, "failed", "RuntimeError: boom")]
    written = report.write(tmp_path, run, None, [])
    assert table_rows(written.text, "## Not measured") == {
        "bf16": ["failed: RuntimeError: boom"],
        "cpu_offload, offload+fp16": [f"unavailable: {offload}"],
    }


def test_cli_gate_writes_the_report_and_grows_the_history(tmp_path, capsys):
    base = synthetic("2026-11-01T00:00:00+00:00", {"fp32": 1.0})
    store.write_atomic(store.path_for(tmp_path / "baselines", "hw", "tiny"), base)
    hist, summary = tmp_path / "history", tmp_path / "summary.md"
    for day in (2, 3):
        run = tmp_path / f"run{day}.json"
        store.write_atomic(run, synthetic(f"2026-11-0{day}T00:00:00+00:00", {"fp32": 1.0}))
        args = ["gate", str(run), "--baselines-dir", str(tmp_path / "baselines"), "--report", str(tmp_path / f"r{day}")]
        assert cli.main([*args, "--history", str(hist), "--markdown", str(summary)]) == 0
    assert len(store.kept_runs(hist)[0]) == 2
    text = (tmp_path / "r3" / "report.md").read_text()
    assert "**passed**" in text and "2 comparable run(s) kept" in text
    assert store.load(tmp_path / "r3" / "run.json").created.startswith("2026-11-03")
    assert summary.read_text().count("# Bark performance report") == 2
    assert "report: " in capsys.readouterr().out
