"""The thin pytest layer: options, the `bark_case` parametrization, the `bark` fixture, and the gate hooks.

`pytest benchmarks --benchmark-compare` runs every configuration x batch size through pytest-benchmark's
`pedantic`, saves the run, finds the baseline for this hardware and checkpoint, prints the verdict table
and fails the session on a regression. pytest-benchmark's own `--benchmark-compare-fail` is untouched.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

import pytest

_KEY = pytest.StashKey["_Bark"]()
_CASES = pytest.StashKey[list]()
_PLANNED = pytest.StashKey[list]()  # the collected (selected) benchmarks, in run order
ENV_TOKENS = "BARK_PERF_TOKENS"


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("bark-perf", "Bark performance regression suite")
    g.addoption(
        "--bark-checkpoint",
        default=None,
        help="tiny (default; env BARK_PERF_CHECKPOINT), suno/bark-small, suno/bark, or a local folder",
    )
    g.addoption("--bark-device", default="auto", help="auto (accelerator if present), cpu, cuda, cuda:1, xpu, mps")
    g.addoption("--bark-configs", default=None, help="comma-separated configuration names (default: all)")
    g.addoption("--bark-batch-sizes", default="1,8", help="comma-separated batch sizes (default: 1,8)")
    g.addoption("--bark-tokens", type=int, default=None, help="semantic tokens per call (default: 32 cpu, 256 gpu)")
    g.addoption("--bark-rounds", type=int, default=None, help="measured rounds per benchmark (default: 5 cpu, 10 gpu)")
    g.addoption("--bark-warmup", type=int, default=None, help="warm-up rounds (default: 1 cpu, 2 gpu)")
    g.addoption("--bark-threads", type=int, default=None, help="CPU threads for torch (default: torch's own)")
    g.addoption("--bark-allow-busy-gpu", action="store_true", help="measure even if other processes use the GPU")
    g.addoption("--bark-shard", default=None, help="K/N: run the K-th of N shards (whole configurations)")
    g.addoption("--bark-no-fidelity", action="store_true", help="skip the fidelity check against fp32 eager")
    g.addoption("--bark-compare", action="store_true", help="run the gate (implied by --benchmark-compare)")
    g.addoption("--bark-baselines-dir", default=None, help="where baselines live (default: <rootdir>/baselines)")
    g.addoption("--bark-baseline", default=None, help="compare with this baseline file instead of the matching one")
    g.addoption("--bark-force-compare", action="store_true", help="compare even across hardware/workload")
    g.addoption("--bark-allow-lost", default="", help="configurations (comma-separated, or 'all') that may be lost")
    g.addoption("--bark-save-baseline", action="store_true", help="adopt this run as the baseline (after success)")
    g.addoption("--bark-results-dir", default=None, help="where each run's JSON is kept (default: <rootdir>/results)")


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


class _Bark:
    """Built lazily at the first benchmark: plain test runs never import torch through this plugin."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.session: Any = None
        self.used = False
        self.outcome: Any = None
        self.saved_run: Path | None = None
        self.report: Any = None
        self.notes: list[str] = []

    def option(self, name: str) -> Any:
        return self.config.getoption(name)

    def path_option(self, name: str, default: str) -> Path:
        value = self.option(name)
        return Path(value) if value else Path(self.config.rootpath) / default

    def bench(self) -> Any:
        from perf_utils.device import DeviceError, cpu_busy_message, resolve_device
        from perf_utils.runner import RunPlan
        from perf_utils.session import BenchSession
        from perf_utils.trackers.nvml import other_gpu_processes_message

        if self.session is None:
            self.used = True
            tokens = self.option("bark_tokens") or (int(os.environ[ENV_TOKENS]) if os.environ.get(ENV_TOKENS) else None)
            plan = RunPlan.make(
                self.option("bark_checkpoint"),
                resolve_device(self.option("bark_device")),
                tokens,
                self.option("bark_rounds"),
                self.option("bark_warmup"),
                self.option("bark_threads"),
            )
            busy = other_gpu_processes_message(plan.device)
            if busy and not self.option("bark_allow_busy_gpu"):
                raise DeviceError(busy + "; free the GPU or pass --bark-allow-busy-gpu to measure anyway")
            if busy:
                self.notes.append("WARNING: " + busy + "; timings and NVML memory include their load")
            if plan.device.type == "cpu" and (load := cpu_busy_message()):
                self.notes.append("WARNING: " + load)
            self.session = BenchSession(
                plan,
                progress=self._progress,
                check_fidelity=not self.option("bark_no_fidelity"),
                planned=self.config.stash.get(_PLANNED, []),
            )
        return self.session

    def _progress(self, message: str) -> None:
        """Progress of long runs; shown with -v, written past pytest's output capture."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or self.config.getoption("verbose") <= 0:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(f"  [bark] {message}")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_KEY] = _Bark(config)


def _cases(config: pytest.Config) -> list[Any]:
    """The benchmarks this run selects; bad options are usage errors (exit 4) that name the option."""
    from perf_utils import configs
    from perf_utils.session import cases, parse_shard, shard

    try:
        selected = configs.select(_csv(config.getoption("bark_configs")))
    except KeyError as exc:
        raise pytest.UsageError(f"--bark-configs: {exc.args[0]}") from None
    raw = config.getoption("bark_batch_sizes")
    try:
        sizes = [int(b) for b in _csv(raw)]
    except ValueError:
        sizes = []
    if not sizes or not all(1 <= b <= 8 for b in sizes):
        raise pytest.UsageError(f"--bark-batch-sizes {raw!r}: integers from 1 to 8 (8 prompts), e.g. 1,8")
    all_cases = cases(selected, sizes)
    if config.getoption("bark_shard"):
        try:
            all_cases = shard(all_cases, *parse_shard(config.getoption("bark_shard")))
        except ValueError as exc:
            raise pytest.UsageError(str(exc)) from None
    return all_cases


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Validate the selection options once, after every plugin registered its configurations (unused options
    cost nothing: a plain test run never imports torch through here)."""
    opts = session.config.getoption
    if opts("bark_configs") or opts("bark_shard") or opts("bark_batch_sizes") != "1,8":
        session.config.stash[_CASES] = _cases(session.config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bark_case" not in metafunc.fixturenames:
        return
    all_cases = metafunc.config.stash.get(_CASES, None)
    if all_cases is None:
        all_cases = _cases(metafunc.config)
    metafunc.parametrize("bark_case", all_cases, ids=[c.id for c in all_cases])


def pytest_collection_finish(session: pytest.Session) -> None:
    planned = [
        item.callspec.params["bark_case"]
        for item in session.items
        if "bark_case" in getattr(getattr(item, "callspec", None), "params", {})
    ]
    session.config.stash[_PLANNED] = planned
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if planned and reporter is not None and session.config.getoption("verbose") <= 0:
        reporter.write_line(f"bark-perf: {len(planned)} benchmarks; -v shows progress (benchmark, round, time left)")


@pytest.fixture(scope="session")
def bark(pytestconfig: pytest.Config) -> Any:
    """The benchmark session; usage errors (bad checkpoint, device) stop the whole run with one clear line."""
    from perf_utils.checkpoints import CheckpointError
    from perf_utils.device import DeviceError

    state = pytestconfig.stash[_KEY]
    try:
        bench = state.bench()
    except (CheckpointError, DeviceError, ValueError) as exc:
        pytest.exit(f"bark-perf: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    yield bench
    bench.release()


@pytest.fixture
def bark_measure(bark: Any, benchmark: Any, pytestconfig: pytest.Config) -> Any:
    """`bark_measure(case)`: measure one case through `benchmark.pedantic`, skipping unavailable ones."""
    from perf_utils.session import Unavailable, benchmark_extra_info

    def run(case: Any) -> Any:
        def timed(fn: Any, rounds: int, warmup: int) -> None:
            benchmark.pedantic(fn, rounds=rounds, warmup_rounds=warmup, iterations=1)

        try:
            result = bark.measure(case, timed)
        except Unavailable as why:
            pytest.skip(str(why))
        benchmark.extra_info["bark"] = benchmark_extra_info(result)
        if result.fidelity and result.fidelity.get("error"):
            pytestconfig.stash[_KEY].notes.append(f"{case.id}: fidelity not checked ({result.fidelity['error'][:200]})")
        if result.fidelity and result.fidelity["passed"] is False:
            pytest.fail(f"{case.id} computes something else: " + "; ".join(result.fidelity["problems"]))
        return result

    return run


def _gate_requested(config: pytest.Config) -> bool:
    return bool(config.getoption("bark_compare") or config.getoption("benchmark_compare", default=False))


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state: _Bark = session.config.stash[_KEY]
    if not state.used or state.session is None:
        return
    from perf_utils import baselines
    from perf_utils.gate import GateOptions, run_gate
    from perf_utils.thresholds import Thresholds, ThresholdsError

    bench = state.session
    bench.release()
    record = bench.record
    if not record.results:
        return
    results_dir = state.path_option("bark_results_dir", "results")
    shard = state.option("bark_shard")
    state.saved_run = bench.save_run(results_dir, f"-shard{shard.replace('/', 'of')}" if shard else "")
    root = state.path_option("bark_baselines_dir", "baselines")
    explicit = state.option("bark_baseline")
    try:
        thresholds = Thresholds.from_pyproject(Path(session.config.rootpath) / "pyproject.toml", record.device_type)
    except ThresholdsError as exc:
        thresholds = None
        state.notes.append(str(exc))
    if _gate_requested(session.config) or explicit:
        if thresholds is None:
            session.exitstatus = pytest.ExitCode.USAGE_ERROR
            return
        opts = GateOptions(
            baselines_dir=root,
            thresholds=thresholds,
            baseline_file=Path(explicit) if explicit else None,
            force=state.option("bark_force_compare"),
            allow_lost=frozenset(_csv(state.option("bark_allow_lost"))),
        )
        state.outcome = run_gate(record, opts)
        if state.outcome.exit_code and session.exitstatus == 0:
            session.exitstatus = state.outcome.exit_code
    if state.option("bark_save_baseline"):
        _save_baseline(state, session, record, root, baselines)
    state.report = _write_report(state, record, results_dir, thresholds)


def _write_report(state: _Bark, record: Any, results_dir: Path, thresholds: Any) -> Any:
    """The run's folder gets report.md and figures; the other kept runs in `results_dir` are its history."""
    from perf_utils import history, report

    try:
        kept, skipped = history.kept_runs(results_dir, like=record)
        return report.write(state.saved_run.parent, record, state.outcome, kept, skipped, thresholds)
    except Exception as exc:  # noqa: BLE001 - a broken report must never cost the run its verdict
        state.notes.append(f"report not written: {type(exc).__name__}: {exc}")
        return None


def _save_baseline(state: _Bark, session: pytest.Session, record: Any, root: Path, baselines: Any) -> None:
    failed = [r.id for r in record.results if r.status == "failed"]
    if session.testsfailed or failed or session.exitstatus not in (0,):
        state.notes.append(
            "baseline NOT updated: the run failed"
            + (f" ({', '.join(failed)})" if failed else f" (exit status {int(session.exitstatus)})")
            + "; fix the run first, the stored baseline is untouched"
        )
        return
    path = baselines.path_for(root, record.hardware, record.checkpoint["key"])
    old = None
    if path.exists():
        try:
            old = baselines.load(path)
        except baselines.BaselineError as exc:
            state.notes.append(f"baseline NOT updated: {exc}; move the broken file away to replace it")
            session.exitstatus = 10
            return
    new = baselines.merged(old, record)
    baselines.write_atomic(path, new)
    ran = sum(r.status == "ok" for r in record.results)
    added = sorted(set(new.by_id()) - set(old.by_id())) if old else []
    state.notes.append(
        f"baseline {'updated' if old else 'created'}: {path} ({ran} measured, "
        f"{len(record.results) - ran} unavailable here"
        + (f"; new: {', '.join(added)}" if added else "")
        + (f"; kept from before: {len(new.results) - len(record.results)}" if old else "")
        + ")"
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state: _Bark = config.stash[_KEY]
    if not state.used:
        return
    from perf_utils.table import not_measured_line, summary_line, verdict_table

    tr = terminalreporter
    tr.section("bark performance gate")
    outcome = state.outcome
    if outcome is not None:
        for line in outcome.messages:
            tr.write_line(line)
        if outcome.comparison is not None:
            tr.write_line(f"baseline: {outcome.baseline_path}")
            tr.write_line(verdict_table(outcome.comparison, measured_only=True))
            if rest := not_measured_line(outcome.comparison):
                tr.write_line(rest)
            tr.write_line(summary_line(outcome.comparison), red=outcome.comparison.failed, bold=True)
    elif state.session is not None:
        tr.write_line("gate not run (add --benchmark-compare or --bark-compare to compare with the baseline)")
    for note in state.notes:
        tr.write_line(note)
    if state.saved_run is not None:
        tr.write_line(f"run saved: {state.saved_run}")
    if state.report is not None:
        tr.write_line(f"report: {state.report.markdown} (figures beside it)", bold=True)
    _job_summary(state)


def _job_summary(state: _Bark) -> None:
    """In GitHub Actions, the report (or at least the verdict) goes to the job summary as Markdown."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return
    from perf_utils.table import markdown_section

    if state.report is not None:
        text = state.report.summary
    elif state.outcome is not None and state.outcome.comparison is not None:
        text = markdown_section(state.outcome.comparison, state.outcome.baseline_path)
    else:
        return
    with open(target, "a", encoding="utf-8") as f:
        f.write(text)
