"""`python -m perf_utils`: the library without pytest.

configs         the configuration matrix with availability here and the exact reason when unavailable
run             measure configurations x batch sizes, print a table, optionally save JSON
merge           one run record from the shards of a sharded run
gate            compare a saved run with its baseline; optionally write its report and keep it in a history
compare-stacks  run the suite in two software stacks and gate the candidate
gate-quality    measure the gate's false alarms and the smallest slowdown it catches here
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tabulate import tabulate

from perf_utils import configs
from perf_utils.checkpoints import CheckpointError
from perf_utils.device import DeviceError, resolve_device
from perf_utils.record import RunRecord
from perf_utils.runner import RunPlan, run_matrix, stderr_progress
from perf_utils.stack import current_stack
from perf_utils.thresholds import Thresholds, ThresholdsError

RUN_COLUMNS = (  # (metric, header, format)
    ("latency_s", "latency s", ".3f"),
    ("throughput_sps", "samples/s", ".2f"),
    ("rtf", "RTF", ".3f"),
    ("host_peak_mb", "host peak MB", ".1f"),
    ("accel_peak_mb", "accel peak MB", ".1f"),
    ("nvml_process_peak_mb", "NVML proc MB", ".1f"),
    ("energy_j", "energy J", ".2f"),
    ("stage_semantic_s", "semantic s", ".3f"),
    ("stage_coarse_s", "coarse s", ".3f"),
    ("stage_fine_s", "fine s", ".3f"),
    ("stage_codec_s", "codec s", ".3f"),
)


def configs_table(device_type: str) -> str:
    stack = current_stack()
    rows = []
    for c in configs.select():
        reason = configs.unavailable_reason(c, stack, device_type)
        rows.append((c.name, c.summary, "available" if reason is None else reason))
    return tabulate(rows, headers=("configuration", "what it changes", f"on {device_type}"), tablefmt="github")


def run_table(record: RunRecord) -> str:
    """Medians over the measured rounds; columns with no data anywhere (e.g. GPU memory on CPU) are dropped."""
    ok = record.measured()
    columns = [c for c in RUN_COLUMNS if any(r.values(c[0]) for r in ok)]
    rows = []
    for r in record.results:
        if r.status != "ok":
            rows.append([r.id, r.status + ": " + (r.reason or "")] + [""] * (len(columns) + 3))
            continue
        cells = [format(r.summary(m).median, fmt) if r.values(m) else "-" for m, _, fmt in columns]
        counts = r.counts or {}
        overhead = r.summary("overhead_s").median / r.summary("latency_s").median
        rows.append(
            [
                r.id,
                len(r.rounds),
                *cells,
                counts.get("semantic_tokens"),
                counts.get("audio_samples"),
                f"{overhead:.2%}",
            ]
        )
    headers = ["benchmark", "rounds", *(h for _, h, _ in columns), "sem tokens", "audio samples", "overhead"]
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def _gate_quality(args: argparse.Namespace, plan: RunPlan) -> int:
    from perf_utils.quality import measure_quality, quality_table

    thresholds = Thresholds.from_pyproject(args.pyproject, plan.device.type)
    configs.get(args.config)
    rows = measure_quality(
        plan,
        thresholds,
        args.config,
        args.batch_size or [1],
        args.repeats,
        args.trials,
        [float(s) for s in args.slowdowns.split(",") if s],
        [int(s) for s in args.buffers_mb.split(",") if s],
        stderr_progress,
    )
    print(
        f"gate quality for {args.config} on {plan.checkpoint.key}, {plan.device}: "
        f"{plan.warmup} warm-up + {plan.rounds} rounds per run, each run compared with one reference run"
    )
    print(quality_table(rows, thresholds))
    return 0


def _names(value: str) -> list[str]:
    """A comma-separated option (`--allow-lost a,b`) as its names."""
    return [v.strip() for v in value.split(",") if v.strip()]


def _saved_runs(args: argparse.Namespace) -> int:
    """`merge` and `gate`: work on saved run records only (no torch model involved)."""
    from perf_utils import baselines
    from perf_utils.gate import EXIT_BAD_BASELINE, GateOptions, run_gate
    from perf_utils.table import markdown_section, summary_line, verdict_table

    try:
        if args.command == "merge":
            merged = baselines.merge_shards(args.shards)
            baselines.write_atomic(args.output, merged)
            print(f"merged {len(args.shards)} shards ({len(merged.results)} benchmarks) into {args.output}")
            return 0
        run = baselines.load(args.run)
        opts = GateOptions(
            baselines_dir=args.baselines_dir,
            thresholds=Thresholds.from_pyproject(args.pyproject, run.device_type),
            baseline_file=args.baseline,
            force=args.force_compare,
            allow_lost=frozenset(_names(args.allow_lost)),
        )
    except (baselines.BaselineError, ThresholdsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_BASELINE
    outcome = run_gate(run, opts)
    for line in outcome.messages:
        print(line)
    if outcome.comparison is not None:
        print(f"baseline: {outcome.baseline_path}")
        print(verdict_table(outcome.comparison))
        print(summary_line(outcome.comparison))
    summary = markdown_section(outcome.comparison, outcome.baseline_path) if outcome.comparison else ""
    if args.report:
        summary = _report(args, run, outcome, opts.thresholds).summary
    if args.markdown and summary:
        with args.markdown.open("a", encoding="utf-8") as f:
            f.write(summary)
    return outcome.exit_code


def _report(args: argparse.Namespace, run: RunRecord, outcome: Any, thresholds: Thresholds) -> Any:
    """`gate --report DIR [--history DIR]`: the run's report folder; with a history, the run joins it first."""
    from perf_utils import baselines, history, report
    from perf_utils.record import RUN_FILE

    kept, skipped = [], []
    if args.history:
        history.keep(args.history, run)
        kept, skipped = history.kept_runs(args.history, like=run)
    baselines.write_atomic(args.report / RUN_FILE, run)
    written = report.write(args.report, run, outcome, kept, skipped, thresholds)
    print(f"report: {written.markdown} (figures beside it; {len(kept)} kept runs in the history)")
    return written


def _compare_stacks(args: argparse.Namespace) -> int:
    from perf_utils import stacks
    from perf_utils.gate import EXIT_REGRESSION
    from perf_utils.table import markdown_section, summary_line, verdict_table

    try:
        pinned = stacks.StackSpec.parse("pinned", args.pinned)
        candidate = stacks.StackSpec.parse("candidate", args.candidate)
        old, new, comparison = stacks.compare_stacks(
            pinned,
            candidate,
            args.venvs_dir.resolve(),
            args.results_dir.resolve(),
            [a for a in args.pytest_args if a != "--"],
            args.pyproject,
            set(_names(args.allow_lost)),
            args.torch or stacks.TORCH_REQUIREMENT,
            stderr_progress,
        )
    except (stacks.StackError, ThresholdsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"pinned:    {stacks.versions_line(old)}")
    print(f"candidate: {stacks.versions_line(new)}")
    print(verdict_table(comparison))
    print(summary_line(comparison))
    if args.markdown:
        with args.markdown.open("a", encoding="utf-8") as f:
            f.write(markdown_section(comparison, f"pinned stack ({stacks.versions_line(old)})"))
    return EXIT_REGRESSION if comparison.failed else 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m perf_utils", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("configs", help="list configurations and whether each can run here")
    c.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    r = sub.add_parser("run", help="measure configurations on a checkpoint")
    r.add_argument("--config", action="append", help="configuration name (repeatable; default: all available)")
    r.add_argument("--batch-size", type=int, action="append", help="batch size (repeatable; default: 1 and 8)")
    r.add_argument("--checkpoint", default=None, help="tiny (default), suno/bark-small, suno/bark, or a folder")
    r.add_argument("--device", default="auto")
    r.add_argument("--tokens", type=int, default=None, help="semantic tokens per call (default 32 cpu, 256 gpu)")
    r.add_argument("--rounds", type=int, default=None, help="measured calls per benchmark")
    r.add_argument("--warmup", type=int, default=None, help="unrecorded calls before measuring")
    r.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's own)")
    r.add_argument("--json", type=Path, default=None, help="also write the run record here")
    m = sub.add_parser("merge", help="merge the run records of shards into one")
    m.add_argument("output", type=Path)
    m.add_argument("shards", type=Path, nargs="+")
    g = sub.add_parser("gate", help="compare a saved run with its baseline, as `pytest --benchmark-compare` does")
    g.add_argument("run", type=Path, help="a run record (results/<run>/run.json, or a merged one)")
    g.add_argument("--baselines-dir", type=Path, default=Path("baselines"))
    g.add_argument("--baseline", type=Path, default=None)
    g.add_argument("--force-compare", action="store_true")
    g.add_argument("--allow-lost", default="")
    g.add_argument("--markdown", type=Path, default=None, help="also append the table (or report) as Markdown here")
    g.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"), help="thresholds from here")
    g.add_argument("--report", type=Path, default=None, help="write the run's report folder here (Markdown, PNGs)")
    g.add_argument("--history", type=Path, default=None, help="kept runs (trends); this run is added to them")
    s = sub.add_parser("compare-stacks", help="run the suite in two software stacks here and gate the candidate")
    s.add_argument("--pinned", required=True, help="requirements file or 'pkg==v pkg==v' (e.g. stacks/legacy.txt)")
    s.add_argument("--candidate", required=True, help="requirements file or 'pkg==v pkg==v' (e.g. stacks/current.txt)")
    s.add_argument("--venvs-dir", type=Path, default=Path(".stacks"), help="venvs are cached here by requirements")
    s.add_argument("--results-dir", type=Path, default=Path("results/stacks"))
    s.add_argument("--torch", default=None, help="torch requirement for both venvs (default torch==2.13.0, CPU)")
    s.add_argument("--allow-lost", default="")
    s.add_argument("--markdown", type=Path, default=None, help="also append the table as Markdown here")
    s.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"), help="thresholds from here")
    s.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to `pytest benchmarks`")
    q = sub.add_parser("gate-quality", help="measure the gate's false alarms and sensitivity here")
    q.add_argument("--config", default="baseline")
    q.add_argument("--batch-size", type=int, action="append", help="repeatable; default 1")
    q.add_argument("--checkpoint", default=None)
    q.add_argument("--device", default="auto")
    q.add_argument("--tokens", type=int, default=None)
    q.add_argument("--rounds", type=int, default=None)
    q.add_argument("--warmup", type=int, default=None)
    q.add_argument("--threads", type=int, default=None)
    q.add_argument("--repeats", type=int, default=10, help="unchanged runs compared with the reference")
    q.add_argument("--trials", type=int, default=3, help="runs per injected fault size")
    q.add_argument("--slowdowns", default="0.05,0.1,0.2,0.3,0.5", help="comma-separated fractions")
    q.add_argument("--buffers-mb", default="2,8,32", help="comma-separated extra host buffers in MB")
    q.add_argument("--pyproject", type=Path, default=Path("pyproject.toml"), help="thresholds from here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command in ("merge", "gate"):
        return _saved_runs(args)
    if args.command == "compare-stacks":
        return _compare_stacks(args)
    try:
        device = resolve_device(args.device)
        if args.command == "configs":
            print(configs_table(device.type))
            return 0
        plan = RunPlan.make(args.checkpoint, device, args.tokens, args.rounds, args.warmup, args.threads)
        if args.command == "gate-quality":
            return _gate_quality(args, plan)
        selected = configs.select(args.config)
    except (CheckpointError, DeviceError, KeyError, ValueError, ThresholdsError) as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return 2
    if not args.config:
        stack = current_stack()
        selected = [c for c in selected if configs.unavailable_reason(c, stack, device.type) is None]
    record = run_matrix(plan, selected, args.batch_size or configs.BATCH_SIZES, stderr_progress)
    print(
        f"checkpoint {plan.checkpoint.key} on {record.hardware} ({device}), "
        f"{plan.n_tokens} semantic tokens, {plan.warmup} warm-up + {plan.rounds} rounds; medians:"
    )
    print(run_table(record))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record.to_dict(), indent=2))
        print(f"run record written to {args.json}")
    return 1 if any(r.status == "failed" for r in record.results) else 0
