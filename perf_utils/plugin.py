"""The pytest layer: options, the `bark_case` parametrization, the `bark_measure` fixture, and hooks that hand the
finished run to the one end-of-run path (`finish`).

`pytest benchmarks --benchmark-compare` measures every configuration x batch size through the run loop
(`measure.run.Run`): at the first benchmark the whole run (its rounds are interleaved across benchmarks, in
several worker processes); each benchmark then reports its own result and replays its rounds into
pytest-benchmark. `finish` keeps the run, gates it against the baseline for this hardware and checkpoint, writes
the report and decides the exit status. Interrupted (Ctrl-C), the run still goes there with what it measured.
pytest-benchmark's own `--benchmark-compare-fail` is untouched. Torch is imported only once a benchmark runs.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from perf_utils import options
from perf_utils.finish import Finish, Finished, check_before_measuring, finish
from perf_utils.options import FinishChoices, RunOptions

_STATE = pytest.StashKey["_State"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("bark-perf", "Bark performance regression suite")
    options.add_options(group.addoption, "--bark-", options.RUN + options.FINISH)


class _State:
    """The run of this session (built at the first benchmark) and what `finish` made of it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        try:
            self.run_options = RunOptions.read(config.getoption)
        except ValueError as exc:  # an environment variable's value, named by the message
            raise pytest.UsageError(str(exc)) from None
        self.planned: list[Any] = []
        self.run: Any = None
        self.warnings: list[str] = []
        self.finished: Finished | None = None

    def start(self) -> Any:
        """The run loop, with the checks that must pass before measuring anything (a busy GPU is refused)."""
        if self.run is None:
            from perf_utils.bark.device import DeviceError, cpu_busy_message
            from perf_utils.measure.run import Run, RunPlan
            from perf_utils.measure.trackers.nvml import other_gpu_processes_message

            o = self.run_options
            plan = RunPlan.of(o)
            busy = other_gpu_processes_message(plan.device)
            if busy and not o.allow_busy_gpu:
                raise DeviceError(busy + "; free the GPU or pass --bark-allow-busy-gpu to measure anyway")
            if busy:
                self.warnings.append("WARNING: " + busy + "; timings and NVML memory include their load")
            if plan.device.type == "cpu" and (load := cpu_busy_message()):
                self.warnings.append("WARNING: " + load)
            self.run = Run(plan, self._progress, o.fidelity, self.planned)
            if stop := check_before_measuring(self.run.record, self._how()):
                text = "\n".join(line.text for line in stop.lines)
                pytest.exit(f"bark-perf: {text}", returncode=stop.exit_code)
        return self.run

    def _how(self) -> Finish:
        """Where the end-of-run path reads and writes, and what it was asked to do: the same before the run
        (`check_before_measuring`) as after it."""
        root = Path(self.config.rootpath)
        choices = FinishChoices.read(self.config.getoption)
        compare = choices.compare or bool(self.config.getoption("benchmark_compare", default=False))
        return Finish(
            choices=replace(choices, compare=compare),
            baselines_dir=choices.baselines_dir or root / "baselines",
            pyproject=choices.pyproject or root / "pyproject.toml",
            golden_dir=choices.golden_dir or root / "golden",
            results_dir=choices.results_dir or root / "results",
            header=self.warnings,
        )

    def _progress(self, message: str) -> None:
        """Progress of long runs; shown with -v, written past pytest's output capture."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is None or self.config.getoption("verbose") <= 0:
            return
        with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
            reporter.write_line(f"  [bark] {message}")

    def finish(self, session: pytest.Session) -> None:
        if self.run is None:
            return
        self.run.release()
        record = self.run.record
        # the run loop sets the schedule once it has rounds to record, whole or interrupted
        cut = session.exitstatus == pytest.ExitCode.INTERRUPTED or self.run.stopped
        cut_before_measuring = cut and record.schedule is None
        if not record.results or cut_before_measuring:  # nothing measured: no run to keep, judge or report
            return
        status = int(session.exitstatus)
        failed_status = f"exit status {status}" if status else None
        run_failed = ", ".join(record.failed()) or record.interrupted or failed_status
        self.finished = finish(record, replace(self._how(), run_failed=run_failed, measure_more=self.run.measure_more))
        if self.finished.exit_code and session.exitstatus == 0:
            session.exitstatus = self.finished.exit_code


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STATE] = _State(config)
    if config.getoption("benchmark_compare", default=False) is True:
        # A bare --benchmark-compare is this suite's "gate the run against its baseline". With no run in
        # pytest-benchmark's own storage, that plugin would first warn "Can't compare ... Can't load the previous
        # benchmark", the opposite of what happens. Its own comparison still runs when its storage has runs.
        warnings.filterwarnings(
            "ignore", r"Can't compare\. No benchmark files .*previous benchmark", pytest.PytestWarning
        )


def _cases(config: pytest.Config) -> list[Any]:
    """The benchmarks this run selects, in the run loop's order; a bad selection is a usage error naming it."""
    from perf_utils.measure.run import select_cases

    try:
        return select_cases(config.stash[_STATE].run_options)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from None


@pytest.hookimpl(trylast=True)
def pytest_sessionstart(session: pytest.Session) -> None:
    """Check a given selection once, before collecting (a plain test run never imports torch through here)."""
    o: RunOptions = session.config.stash[_STATE].run_options
    if o.configs or o.shard:
        _cases(session.config)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "bark_case" in metafunc.fixturenames:
        chosen = _cases(metafunc.config)
        metafunc.parametrize("bark_case", chosen, ids=[c.id for c in chosen])


def pytest_collection_finish(session: pytest.Session) -> None:
    state: _State = session.config.stash[_STATE]
    params = (getattr(getattr(item, "callspec", None), "params", {}) for item in session.items)
    skipped = session.config.getoption("benchmark_skip", False)  # pytest-benchmark skips them all
    state.planned[:] = [] if skipped else [p["bark_case"] for p in params if "bark_case" in p]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if state.planned and reporter is not None and session.config.getoption("verbose") <= 0:
        reporter.write_line(
            f"bark-perf: {len(state.planned)} benchmarks; -v shows progress (benchmark, round, time left)"
        )


@pytest.fixture(scope="session")
def bark_run(pytestconfig: pytest.Config) -> Any:
    """The run loop of this session; usage errors (bad checkpoint, device) stop the whole run with one line."""
    from perf_utils.bark.checkpoints import CheckpointError
    from perf_utils.bark.device import DeviceError

    try:
        run = pytestconfig.stash[_STATE].start()
    except (CheckpointError, DeviceError, ValueError) as exc:
        pytest.exit(f"bark-perf: {exc}", returncode=pytest.ExitCode.USAGE_ERROR)
    yield run
    run.release()


@pytest.fixture
def bark_measure(bark_run: Any, benchmark: Any, pytestconfig: pytest.Config) -> Any:
    """`bark_measure(case)`: measure one case with pytest-benchmark timing the rounds; an unavailable case skips
    with its reason, a failed one raises its error, one that computes something else fails."""

    def measure(case: Any) -> Any:
        try:
            result = bark_run.result(case)
        except KeyboardInterrupt:
            benchmark.skipped = True  # cut short: pytest-benchmark would warn its fixture "was not used at all"
            raise
        if result.status == "unavailable":
            pytest.skip(result.reason)
        if result.error is not None:
            raise result.error
        _replay(benchmark, result.values("latency_s"))
        benchmark.extra_info["bark"] = _extra_info(result)
        fid = result.fidelity
        if fid is not None and fid.error:
            pytestconfig.stash[_STATE].warnings.append(f"{case.id}: fidelity not checked ({fid.error[:200]})")
        if fid is not None and fid.passed is False:
            pytest.fail(f"{case.id} computes something else: " + "; ".join(fid.problems))
        return result

    return measure


def _replay(benchmark: Any, latencies: list[float]) -> None:
    """Hand pytest-benchmark the rounds the run loop measured (all invocations, interleaved): its statistics,
    table, storage and --benchmark-compare-fail then describe the same rounds as ours. Its `pedantic` times each
    call with the fixture's timer; a clock that advances by one measured latency per call replays them exactly."""
    if not latencies:
        return
    now, pending = [0.0], iter(latencies)

    def clock() -> float:
        return now[0]

    def one_round() -> None:
        now[0] += next(pending)

    clock.__name__ = "bark_perf.replayed_rounds"
    benchmark._timer = clock  # pytest-benchmark's fixture reads its timer from here for every runner it makes
    benchmark.pedantic(one_round, rounds=len(latencies), warmup_rounds=0, iterations=1)


def _extra_info(result: Any) -> dict[str, Any]:
    """What goes into pytest-benchmark's JSON beside its own stats: our medians and every raw round."""
    data = result.to_dict()
    data["medians"] = {m: result.summary(m).median for m in result.metrics()}
    keys = ("config", "batch_size", "counts", "medians", "rounds", "invocations", "warmup", "changes", "fidelity")
    return {k: data[k] for k in keys}


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    session.config.stash[_STATE].finish(session)


@pytest.hookimpl(wrapper=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> Any:
    """The verdict table before the other plugins' summaries (pytest-benchmark's --benchmark-compare-fail raises
    from its own, which ends the rest), and its headline again after pytest-benchmark's table of the replayed
    rounds, so that the last lines on screen are the verdict and not a table of raw timings."""
    finished = config.stash[_STATE].finished
    if finished is not None:
        terminalreporter.section("bark performance gate")
        for line in finished.lines:
            terminalreporter.write_line(line.text, red=line.red, bold=line.bold)
    try:
        return (yield)
    finally:
        if finished is not None and _benchmark_table_shown(config):
            terminalreporter.ensure_newline()
            terminalreporter.write_line("bark performance gate (its table is above):")
            for line in finished.headline:
                terminalreporter.write_line("  " + line.text, red=line.red, bold=line.bold)


def _benchmark_table_shown(config: pytest.Config) -> bool:
    """Whether pytest-benchmark printed its table (it does when it holds results and is not --benchmark-quiet)."""
    session = getattr(config, "_benchmarksession", None)
    return bool(getattr(session, "groups", None)) and not getattr(session, "quiet", False)
