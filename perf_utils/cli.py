"""`python -m perf_utils`: the library without pytest.

configs         the configuration matrix with availability here and the exact reason when unavailable
run             measure configurations x batch sizes (the same run loop and end-of-run path as pytest)
merge           one run record from the shards of a sharded run
gate            compare a saved run with its baseline; optionally write its report and keep it in a history
compare-stacks  run the suite in two software stacks and gate the candidate
gate-quality    measure the gate's false alarms and the smallest slowdown it catches here
gpu-check       the accelerator paths in one command (tiny matrix, suno/bark's shapes, legacy stack), blog beside

Parsing only: every command hands its work to the library; `merge` and `gate` import no torch. Every option of a
run is also taken as pytest spells it (`--bark-save-golden` for `--save-golden`), as the suite's messages name it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perf_utils import options
from perf_utils.finish import Finish, Finished, check_before_measuring, finish
from perf_utils.options import FinishChoices, RunOptions
from perf_utils.record.record import RunRecord

if TYPE_CHECKING:
    from perf_utils.tools.by_package import Chain

EXIT_USAGE = 2  # argparse's own: a bad option, an unknown configuration, checkpoint or device
EXIT_INTERRUPTED = 130  # the shell's for Ctrl-C: the run kept and judged what it measured before


def _print(done: Finished) -> int:
    for line in done.lines:
        print(line.text)
    return done.exit_code


def _how(args: argparse.Namespace, **how: object) -> Finish:
    """What the end-of-run path is asked to do, with the CLI's defaults (paths relative to where it runs)."""
    choices = FinishChoices.read(lambda name: getattr(args, name, None))
    base = Finish(
        choices=choices,
        baselines_dir=choices.baselines_dir or Path("baselines"),
        pyproject=choices.pyproject or Path("pyproject.toml"),
        golden_dir=choices.golden_dir or Path("golden"),
        results_dir=choices.results_dir,
    )
    return replace(base, **how)


def _finish(record: RunRecord, args: argparse.Namespace, **how: object) -> int:
    """The one end-of-run path."""
    return _print(finish(record, _how(args, **how)))


def _configs(args: argparse.Namespace) -> int:
    from perf_utils.bark import configs
    from perf_utils.bark.device import resolve_device
    from perf_utils.bark.environment import current_stack
    from perf_utils.report.table import configs_table

    device = resolve_device(args.bark_device).type
    stack = current_stack()
    rows = [(c.name, c.summary, configs.unavailable_reasons(c, stack, device)) for c in configs.select()]
    print(configs_table(rows, device))
    return 0


def _run(args: argparse.Namespace) -> int:
    from perf_utils.measure.run import Run, RunPlan, select_cases, stderr_progress
    from perf_utils.report.table import run_table

    o = RunOptions.read(lambda name: getattr(args, name, None))
    plan = RunPlan.of(o)
    selected = select_cases(o)
    run = Run(plan, stderr_progress, o.fidelity)
    if stop := check_before_measuring(run.record, _how(args)):
        return _print(stop)
    if not o.configs:  # everything that can run here
        selected = [c for c in selected if run.unavailable_reason(c.config) is None]
    try:
        record = run.measure_all(selected)
    except KeyboardInterrupt:
        if not run.record.interrupted:
            raise  # nothing measured yet: nothing to keep
        record = run.record
    print(
        f"checkpoint {plan.checkpoint.key} on {record.hardware} ({plan.device}), "
        f"{plan.n_tokens} semantic tokens, {plan.describe()}; medians:"
    )
    print(run_table(record))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record.to_dict(), indent=2))
        print(f"run record written to {args.json}")
    results_dir = args.bark_results_dir or Path("results")
    failed = ", ".join(record.failed()) or None
    code = _finish(record, args, results_dir=results_dir, run_failed=failed, measure_more=run.measure_more)
    return EXIT_INTERRUPTED if record.interrupted else code


def _merge(args: argparse.Namespace) -> int:
    from perf_utils.record import store

    merged = store.merge_shards(args.shards)
    store.write_atomic(args.output, merged)
    n = len(args.shards)
    print(f"merged {n} shard{'s' if n > 1 else ''} ({len(merged.results)} benchmarks) into {args.output}")
    if merged.interrupted:  # kept and judged as interrupted by `gate`, which says it again above its table
        print(f"INTERRUPTED: {merged.interrupted}")
    return 0


def _gate(args: argparse.Namespace) -> int:
    """A saved (or merged) run: gate it; with --history it joins the kept runs first, with --report it gets a
    report folder."""
    from perf_utils.record import store

    record = store.load(args.run)
    args.bark_compare = True
    return _finish(record, args, report_dir=args.report)


def _compare_stacks(args: argparse.Namespace) -> int:
    from perf_utils.measure.run import stderr_progress
    from perf_utils.tools import upgrade

    o = upgrade.run_options(args.pytest_args)  # read once; one it cannot take is said before any stack is built
    specs = {}
    for name in ("pinned", "candidate"):
        given = getattr(args, name)
        if given == upgrade.BASELINE:
            path, stored = upgrade.baseline_path(args.bark_baselines_dir or Path("baselines"), o)
            if not stored:  # as the gate does without a baseline: nothing to compare with is not a failure
                print(f"--{name} baseline: no stored baseline for this machine and checkpoint ({path}); nothing "
                      "compared. Adopt one with `pytest benchmarks --bark-save-baseline`.")  # fmt: skip
                return 0
            given = str(path)
        specs[name] = upgrade.StackSpec.parse(name, given)
        if args.torch:  # asked for: both venvs get it, whatever a record says
            specs[name] = replace(specs[name], torch=None)
    pinned, candidate = specs["pinned"], specs["candidate"]
    stderr_progress(f"pinned: {pinned.describe()}; candidate: {candidate.describe()}")
    venvs, torch = args.venvs_dir.resolve(), args.torch or upgrade.TORCH_REQUIREMENT
    keep = args.bark_keep_runs  # each stack's folder, as the session keeps its runs (not the end-of-run path)
    chain = None
    if args.by_package is None and not args.via:
        old, new, folder = upgrade.run_stacks(
            pinned, candidate, venvs, args.bark_results_dir.resolve(), o, torch, stderr_progress, keep
        )
    else:
        from perf_utils.tools import by_package

        order = [p.strip() for p in (args.by_package or "").split(",") if p.strip()]
        vias = [shlex.split(v) for v in args.via or []]
        chain = by_package.run(pinned, candidate, order, venvs, args.bark_results_dir.resolve(), o, torch,
                               stderr_progress, keep, vias, split=args.by_package is not None)  # fmt: skip
        old, new, folder = chain.records[0], chain.records[-1], chain.folder
    label = f"pinned stack ({upgrade.versions_line(old)})"
    header = [f"pinned:    {upgrade.versions_line(old)}", f"candidate: {upgrade.versions_line(new)}"]
    args.bark_compare, args.bark_results_dir = True, None
    done = finish(new, _how(args, against=old, against_label=label, header=header, report_dir=folder))
    code = _print(done)
    if chain is not None and done.outcome is not None and done.outcome.comparison is not None:
        _print_steps(chain, done)
    return EXIT_INTERRUPTED if new.interrupted else code


def _print_steps(chain: Chain, done: Finished) -> None:
    """`--by-package`: each step judged against the one before it; the table and which step made each change, said
    and added to the candidate's report."""
    from perf_utils.gate.steps import judge_steps
    from perf_utils.report import steps

    assert done.outcome is not None and done.outcome.comparison is not None
    total = done.outcome.comparison
    judged = judge_steps(chain.records, chain.labels, total.thresholds)
    print(f"\n{steps.HEADING} (each stack against the one before it, paired in the same session):")
    print(steps.steps_table(total, judged))
    for line in steps.attribution_lines(total, judged):
        print(line)
    if done.report is not None:
        with done.report.markdown.open("a", encoding="utf-8") as report:
            report.write("\n" + steps.markdown(total, judged))
        print(f"{steps.HEADING}: also in {done.report.markdown}")


def _gate_quality(args: argparse.Namespace) -> int:
    from perf_utils.gate.thresholds import Thresholds
    from perf_utils.measure.alternate import plan_for_pairs
    from perf_utils.measure.run import RunPlan
    from perf_utils.tools.quality import QualityRuns, busy_loops, judged, quality_table

    pyproject = args.bark_pyproject or Path("pyproject.toml")
    if args.from_json:  # judge runs measured before, at the thresholds asked for now
        ignored = [flag for flag, dest, default in args.measuring_options if getattr(args, dest) != default]
        if ignored:  # they would silently not apply to runs measured with other settings
            print(f"error: --from judges runs measured before; these options apply only to measuring: "
                  f"{', '.join(ignored)} (drop them, or measure anew without --from)", file=sys.stderr)  # fmt: skip
            return 2
        try:
            measured = QualityRuns.load(args.from_json)
        except ValueError as exc:
            print(f"error: --from {exc}", file=sys.stderr)
            return 2
        thresholds = Thresholds.from_pyproject(pyproject, measured.device_type)
    else:
        others = (("--reference-invocations", args.reference_invocations), ("--stacks", args.stacks))
        clash = [flag for flag, given in others if given]
        if args.reference_baseline and clash:  # each names another reference than the stored baseline
            print(f"error: --reference-baseline judges against the stored baseline; it cannot be combined with "
                  f"{', '.join(clash)}", file=sys.stderr)  # fmt: skip
            return 2
        o = RunOptions.read(lambda name: getattr(args, name, None))
        if o.shard:
            print("error: --shard: gate-quality measures every scenario in one session; it cannot be sharded",
                  file=sys.stderr)  # fmt: skip
            return 2
        if args.stacks and len(o.configs or []) > 1:
            print("error: --stacks measures one configuration (--configs NAME)", file=sys.stderr)
            return 2
        plan = plan_for_pairs(o) if args.stacks else RunPlan.of(o)
        thresholds = Thresholds.from_pyproject(pyproject, plan.device.type)
        with busy_loops(args.busy):
            header, scenarios, cut = _quality_scenarios(args, o, plan, thresholds)
        measured = QualityRuns(header, plan.device.type, scenarios)
        if args.json:
            measured.save(args.json)
    print(measured.header)
    times = [float(t) for t in options.comma_list(args.time_thresholds)] if args.time_thresholds else [None]
    for t in times:  # the same runs, judged at each time threshold asked for
        th = replace(thresholds.with_time(t), paired=t) if t is not None else thresholds
        print(quality_table(judged(measured.scenarios, th), th))
    return EXIT_INTERRUPTED if not args.from_json and cut else 0


def _quality_scenarios(
    args: argparse.Namespace, o: RunOptions, plan: Any, thresholds: Any
) -> tuple[str, list[Any], bool]:
    """The scenarios gate-quality measures, the line that says how, and whether it was interrupted (Ctrl-C, a time
    limit's SIGINT): then the scenarios are the runs it finished, and the line says so."""
    from perf_utils.tools.quality import QualityInterrupted

    config, sizes = (o.configs or ["fp32"])[0], args.bark_batch_sizes or [1]
    alongside = (o.configs or [])[1:]  # measured beside `config` in every run, unchanged
    setting = f", with {args.busy} busy loop(s) beside it" if args.busy else ""
    if alongside:
        setting += f", measured beside {', '.join(alongside)} (unchanged, interleaved)"
    if args.stacks:
        judged_how = "each session's candidate judged against its own pinned side, paired"
    else:
        ref = args.reference_invocations
        judged_how = "each run compared with one reference run"
        judged_how += f" (taken in {ref} worker processes, as a saved baseline is)" if ref else ""
        if args.reference_baseline:
            judged_how = f"each run compared with the stored baseline in {args.reference_baseline} for this machine"
    where = f"{plan.checkpoint.key}, {plan.device}{setting}"
    header = f"gate quality for {config} on {where}: {plan.describe()}, {judged_how}"
    try:
        return header, _measured_scenarios(args, o, plan, config, alongside, sizes, thresholds), False
    except QualityInterrupted as stop:
        return f"INTERRUPTED: the runs finished before it, judged; {header}", stop.scenarios, True


def _measured_scenarios(
    args: argparse.Namespace, o: RunOptions, plan: Any, config: str, alongside: list[str], sizes: list[int],
    thresholds: Any,
) -> list[Any]:  # fmt: skip
    from perf_utils.measure.run import stderr_progress
    from perf_utils.tools.quality import QualityInterrupted, Remeasure, alternating, cross_process, measure_quality

    slowdowns = [float(s) for s in options.comma_list(args.slowdowns)]
    if args.stacks:
        return alternating(plan, config, sizes, args.stacks, args.trials, slowdowns, stderr_progress)
    scenarios = measure_quality(
        plan,
        config,
        sizes,
        args.repeats,
        args.trials,
        slowdowns,
        [int(s) for s in options.comma_list(args.buffers_mb)],
        stderr_progress,
        Remeasure(args.remeasure_noisy, thresholds) if args.remeasure_noisy else None,
        args.reference_invocations,
        args.reference_baseline,
        alongside,
    )
    if args.processes:
        passed = ["--checkpoint", plan.checkpoint.spec,
                  "--device", str(plan.device), "--tokens", str(plan.n_tokens), "--rounds", str(plan.rounds),
                  "--warmup", str(plan.warmup), "--invocations", str(plan.invocations),
                  *(["--threads", str(o.threads)] if o.threads else [])]  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="gate-quality-") as tmp:
            try:
                scenarios += cross_process(passed, config, sizes, args.processes, Path(tmp), stderr_progress,
                                           alongside)  # fmt: skip
            except KeyboardInterrupt as cut:  # the runs before them, then the separate processes that finished
                raise QualityInterrupted(scenarios + getattr(cut, "scenarios", [])) from None
    return scenarios


def _gpu_check(args: argparse.Namespace) -> int:
    from perf_utils.tools import gpu_check

    steps = gpu_check.EXTRA if args.extra else gpu_check.STEPS
    if args.dry_run:
        total = 0
        for step, cmd, _env in gpu_check.commands(args.out, args.legacy_path, steps):
            total += step.timeout_s if cmd else 0
            print(
                f"{step.name} (at most {step.timeout_s}s): " + (" ".join(cmd) if cmd else "skipped: no --legacy-path")
            )
        print(f"at most {total}s in all")
        return 0
    return 1 if gpu_check.run(args.out, args.legacy_path, steps=steps, within_s=args.within) else 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m perf_utils",
        description=__doc__.split("\n")[0],
        epilog="Every option of a run is also taken as pytest spells it: --bark-save-golden for --save-golden.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    def command(name: str, run: object, help: str, *groups: tuple[options.Option, ...]) -> argparse.ArgumentParser:
        parser = sub.add_parser(name, help=help)
        parser.set_defaults(handler=run)
        for group in groups:
            options.add_options(parser.add_argument, "--", group)
        return parser

    c = command("configs", _configs, "list configurations and whether each can run here")
    c.add_argument("--device", dest="bark_device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    r = command("run", _run, "measure configurations on a checkpoint", options.RUN, options.FINISH)
    r.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the run record here")
    m = command("merge", _merge, "merge the run records of shards into one")
    m.add_argument("output", type=Path)
    m.add_argument("shards", type=Path, nargs="+")
    g = command("gate", _gate, "compare a saved run with its baseline, as `pytest --benchmark-compare` does",
                options.FINISH)  # fmt: skip
    g.add_argument("run", type=Path, help="a run record (results/<run>/run.json, or a merged one)")
    g.add_argument(
        "--report", type=Path, default=None, metavar="DIR", help="write the run's report folder here (Markdown, PNGs)"
    )
    s = command("compare-stacks", _compare_stacks, "run the suite in two software stacks here and gate the candidate",
                options.FINISH)  # fmt: skip
    s.add_argument("--pinned", required=True,
                   help="requirements file or 'pkg==v pkg==v' (e.g. stacks/legacy.txt); a kept run or baseline "
                        "(.json: the stack that measured it); or 'baseline': the stack of this machine's stored "
                        "baseline")  # fmt: skip
    s.add_argument(
        "--candidate",
        required=True,
        help="requirements file, 'pkg==v pkg==v' (e.g. stacks/current.txt), or 'current': this environment as it is",
    )
    s.add_argument("--venvs-dir", type=Path, default=Path(".stacks"), help="venvs are cached here by requirements")
    s.add_argument("--torch", default=None, help="torch requirement for both venvs (default: torch==2.13.0, CPU; "
                   "a stack taken from a record: the torch version it was measured with)")  # fmt: skip
    s.add_argument("--by-package", nargs="?", const="", default=None, metavar="ORDER",
                   help="also measure the stacks between, one more package changed at each step, and say which "
                        "package made each change (ORDER: packages changed first, comma-separated; default torch, "
                        "transformers, optimum, accelerate, then the rest)")  # fmt: skip
    s.add_argument("--via", action="append", default=None, metavar="REQS",
                   help="also measure this stack between (repeatable, in order): the one before it with these "
                        "requirements ('transformers==4.52.4'), e.g. the releases between two of one package; each "
                        "step judged and named as --by-package's are")  # fmt: skip
    s.add_argument("pytest_args", nargs=argparse.REMAINDER, help="after --: passed to `pytest benchmarks`")
    s.set_defaults(bark_results_dir=Path("results/stacks"))
    q = command("gate-quality", _gate_quality, "measure the gate's false alarms and sensitivity here", options.RUN)
    q.add_argument("--pyproject", dest="bark_pyproject", type=Path, default=None, help="thresholds from here")
    q.add_argument("--repeats", type=options.whole, default=10, help="unchanged runs compared with the reference")
    q.add_argument("--reference-invocations", type=options.positive_int, default=None,
                   help="take the reference (the stored baseline's stand-in) in N worker processes (default: as "
                        "many as a run, --invocations)")  # fmt: skip
    q.add_argument("--reference-baseline", type=Path, default=None, metavar="DIR",
                   help="judge every run against the stored baseline in DIR for this machine and checkpoint, taken "
                        "in another session, as --benchmark-compare does (not a reference taken here)")  # fmt: skip
    q.add_argument("--trials", type=options.whole, default=3, help="runs per injected fault size")
    q.add_argument("--slowdowns", default="0.05,0.1,0.2,0.3,0.5", help="comma-separated fractions")
    q.add_argument("--buffers-mb", default="2,8,32", help="comma-separated extra buffers in MB")
    q.add_argument(
        "--processes", type=options.whole, default=0, help="also N unchanged runs as separate processes (A/A)"
    )
    q.add_argument("--stacks", type=options.whole, default=0,
                   help="instead: compare-stacks' paired gate, N sessions with this stack on both sides, and "
                        "--trials sessions per --slowdowns injected into the candidate side")  # fmt: skip
    q.add_argument(
        "--busy", type=options.whole, default=0, help="N busy loops run beside the measurements (a shared machine)"
    )
    q.add_argument("--remeasure-noisy", type=options.seconds, default=0.0,
                   help="SECONDS: re-measure each run while the gate (at the pyproject thresholds) calls it noisy, "
                        "within this budget per run, as --bark-remeasure-noisy does")  # fmt: skip
    q.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help="also write every run measured here, raw rounds and all"
    )
    q.add_argument(
        "--from",
        dest="from_json",
        type=Path,
        default=None,
        metavar="FILE",
        help="measure nothing: judge the runs a --json file holds (at --time-thresholds, pyproject's)",
    )
    q.add_argument("--time-thresholds", default=None,
                   help="judge the same runs at each of these time and throughput thresholds: 0.1,0.2")  # fmt: skip
    for action in q._actions:  # the same option as a run's, with gate-quality's own meaning of the list
        if action.dest == "bark_configs":
            action.help = "the configuration judged (default: fp32), then any measured beside it in every run"
    judging = {"help", "bark_pyproject", "from_json", "time_thresholds"}  # what --from may be given with
    q.set_defaults(
        measuring_options=[(a.option_strings[0], a.dest, a.default) for a in q._actions if a.dest not in judging]
    )
    v = command("gpu-check", _gpu_check, "the accelerator paths in one command, under 8 minutes, with the blog beside")
    v.add_argument("--out", type=Path, default=Path("gpu-check"), help="logs, runs and tables go here")
    v.add_argument("--legacy-path", type=Path, default=None,
                   help="a folder with transformers 4.48 / optimum 1.x (and accelerate<1.10 for offload)")  # fmt: skip
    v.add_argument("--dry-run", action="store_true", help="print the steps and their limits; run nothing")
    v.add_argument("--extra", action="store_true",
                   help="instead of the check, what a lent GPU's time after it can hold: the batching sweep on "
                        "suno/bark's shapes")  # fmt: skip
    v.add_argument(
        "--within",
        type=options.seconds,
        default=None,
        metavar="SECONDS",
        help="no step's limit reaches past this many seconds from now (the time a lent machine has left)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(options.cli_spelling(sys.argv[1:] if argv is None else argv))
    from perf_utils.record.store import BaselineError

    errors: tuple[type[BaseException], ...] = (BaselineError, KeyError, ValueError)
    if args.command not in ("merge", "gate"):  # these never import torch
        from perf_utils.bark.checkpoints import CheckpointError
        from perf_utils.bark.device import DeviceError
        from perf_utils.gate.thresholds import ThresholdsError
        from perf_utils.tools.upgrade import StackError

        errors += (CheckpointError, DeviceError, ThresholdsError, StackError)
    try:
        return args.handler(args)
    except errors as exc:
        print(f"error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
        return _exit_code(exc)


def _exit_code(exc: BaseException) -> int:
    from perf_utils.gate.decide import EXIT_BAD_BASELINE
    from perf_utils.record.store import BaselineError

    return EXIT_BAD_BASELINE if isinstance(exc, BaselineError) else EXIT_USAGE
