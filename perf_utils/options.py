"""Every option, defined once, for the pytest plugin (`--bark-<name>`) and the CLI (`--<name>`).

pytest-benchmark's model: options are declared once and added to both front ends by `add_options(addoption,
prefix)`; pytest's `addoption` and argparse's `add_argument` take the same arguments. What the options mean is
read back into typed dataclasses (`RunOptions`, `FinishChoices`) the same way from both, so no option is parsed
twice. No torch here: the CLI's gate builds its parser without it.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perf_utils.record.record import RENAMED_CONFIGS, Shard

ENV_TOKENS = "BARK_PERF_TOKENS"
DEFAULT_BATCH_SIZES = [1, 8]
MAX_BATCH = 64  # past the 8 distinct prompts they repeat in order (bark.workload); where throughput stops growing


def comma_list(value: str) -> list[str]:
    """`a,b` -> ["a", "b"] (blanks dropped)."""
    return [v.strip() for v in value.split(",") if v.strip()]


def config_names(value: str) -> list[str]:
    """Configuration names; a renamed one is taken under its new name, with a note."""
    names = []
    for name in comma_list(value):
        if name in RENAMED_CONFIGS:
            print(f"note: configuration {name!r} is now called {RENAMED_CONFIGS[name]!r}", file=sys.stderr)
        names.append(RENAMED_CONFIGS.get(name, name))
    return names


def batch_sizes(value: str) -> list[int]:
    try:
        sizes = [int(b) for b in comma_list(value)]
    except ValueError:
        sizes = []
    if not sizes or not all(1 <= b <= MAX_BATCH for b in sizes):
        raise argparse.ArgumentTypeError(f"{value!r}: integers from 1 to {MAX_BATCH}, e.g. 1,8 or 1,8,16,32,64")
    return sizes


def _number(value: str, convert: Callable[[str], Any], ok: Callable[[Any], bool], what: str) -> Any:
    """`value` converted, or a usage error saying what was expected (NaN is never `ok`)."""
    try:
        number = convert(value)
    except ValueError:
        number = None
    if number is None or not ok(number):
        raise argparse.ArgumentTypeError(f"{value!r}: {what}")
    return number


def seconds(value: str) -> float:
    return _number(value, float, lambda n: n >= 0, "seconds, a number of at least 0")


def on_off(value: str) -> bool:
    words = {"on": True, "off": False}
    if value.lower() not in words:
        raise argparse.ArgumentTypeError(f"{value!r}: on or off")
    return words[value.lower()]


def fraction(value: str) -> float:
    return _number(value, float, lambda n: 0 < n <= 1, "a fraction above 0 and at most 1 (0.07 is 7%)")


def positive_int(value: str) -> int:
    return _number(value, int, lambda n: n >= 1, "a whole number of at least 1")


def whole(value: str) -> int:
    return _number(value, int, lambda n: n >= 0, "a whole number of at least 0")


def shard_spec(value: str) -> Shard:
    """`K/N` (`--bark-shard`)."""
    try:
        return Shard.parse(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


MIN_TOKENS = 8  # bark.workload.MIN_TOKENS, said before anything is loaded (options may not import bark: torch)


def semantic_tokens(value: str) -> int:
    return _number(value, int, lambda n: n >= MIN_TOKENS, f"a whole number of at least {MIN_TOKENS} (fewer may end "
                   "the speech at once, which crashes the codec)")  # fmt: skip


@dataclass(frozen=True)
class Option:
    name: str  # the long name without its prefix: `configs` is --bark-configs in pytest, --configs in the CLI
    help: str
    type: Callable[[str], Any] | None = None
    flag: bool = False
    extend: bool = False  # repeatable, each value a list (`--config a --config b` or `--configs a,b`)
    aliases: tuple[str, ...] = ()
    metavar: str = "N"  # what the value is, in --help (pytest's and argparse's default, BARK_<NAME>, says nothing)

    @property
    def dest(self) -> str:
        return "bark_" + self.name.replace("-", "_")


RUN = (
    Option(
        "checkpoint",
        "tiny (default; env BARK_PERF_CHECKPOINT), random:bark-small, random:bark (real shapes, random weights, built "
        "offline), suno/bark-small, suno/bark, or a local folder",
        metavar="CHECKPOINT",
    ),  # fmt: skip
    Option("device", "auto (default: the accelerator if present), cpu, cuda, cuda:1, xpu, mps", metavar="DEVICE"),
    Option(
        "configs",
        "configuration names, comma-separated (default: all)",
        config_names,
        extend=True,
        aliases=("config",),
        metavar="NAMES",
    ),  # fmt: skip
    Option(
        "batch-sizes",
        "batch sizes, comma-separated, up to 64 (default: 1,8)",
        batch_sizes,
        extend=True,
        aliases=("batch-size",),
        metavar="SIZES",
    ),  # fmt: skip
    Option("tokens", f"semantic tokens per call (default: 32 cpu, 256 accelerator; env {ENV_TOKENS})", semantic_tokens),
    Option("rounds", "measured rounds per benchmark and invocation (default: 2 cpu, 4 accelerator)", positive_int),
    Option(
        "invocations",
        "separate worker processes each benchmark is measured in, one after the other (default: 3; 4 a side in "
        "compare-stacks; 10 with --bark-save-baseline: every later run is judged against the baseline's level); 1 "
        "measures in this process",
        positive_int,
    ),  # fmt: skip
    Option(
        "warmup",
        "the least warm-up calls; more until the rounds stop improving, at most 10 (default: 1 cpu, 2 accelerator)",
        whole,
    ),  # fmt: skip
    Option(
        "threads",
        "CPU threads for torch (default: torch's own); recorded, runs with other counts not compared",
        positive_int,
    ),
    Option(
        "shard",
        "run the K-th of N shards (whole configurations; fp32 in every shard, for the ratios)",
        shard_spec,
        metavar="K/N",
    ),
    Option("no-fidelity", "skip the fidelity check against fp32 eager", flag=True),
    Option("allow-busy-gpu", "measure even if other processes use the GPU (warns)", flag=True),
)
FINISH = (
    Option("compare", "run the gate against the stored baseline (implied by --benchmark-compare)", flag=True),
    Option("baselines-dir", "where baselines live (default: baselines/)", Path, metavar="DIR"),
    Option("baseline", "compare with this baseline file instead of the matching one", Path, metavar="FILE"),
    Option("force-compare", "compare even across hardware, checkpoint or workload (says so)", flag=True),
    Option(
        "allow-lost",
        "configurations (comma-separated, or 'all') whose loss does not fail the gate",
        comma_list,
        extend=True,
        metavar="NAMES",
    ),  # fmt: skip
    Option("fail-on-noisy", "a benchmark too noisy to decide at the threshold fails the run", flag=True),
    Option(
        "time-threshold",
        "judge latency and throughput at this least change instead of pyproject's for the device kind "
        "(0.07 on the steady CPU lane: README, 'A steady CPU lane')",
        fraction,
        metavar="FRACTION",
    ),  # fmt: skip
    Option(
        "time-per-host-probe",
        "judge latency and throughput in units of the host's speed, each round divided by its "
        "invocation's median of a fixed CPU probe, so a machine slower today for every program is not Bark slower "
        "(both runs need the probe; default: time_per_host_probe in pyproject's thresholds for the device kind: on "
        "for the CPU)",
        on_off,
        metavar="on|off",
    ),  # fmt: skip
    Option(
        "remeasure-noisy",
        "measure the benchmarks the gate calls noisy in more invocations, one at a time, judged again "
        "after each, while this budget holds one more (default 0: off; a run just measured, not a saved one)",
        seconds,
        metavar="SECONDS",
    ),  # fmt: skip
    Option("save-baseline", "adopt this run as the baseline (only after a clean run)", flag=True),
    Option(
        "add-session",
        "adopt this run as one more session of the stored baseline instead of replacing it (only after a clean run; "
        "same stack; the newest 8 kept): the gate then measures how far the machine's level moves between sessions "
        "instead of assuming pyproject's drift",
        flag=True,
    ),  # fmt: skip
    Option(
        "save-golden",
        "adopt this run's fp32 eager reference as the checkpoint's golden fingerprint (only after a clean run)",
        flag=True,
    ),  # fmt: skip
    Option("golden-dir", "where golden fingerprints live, one per checkpoint (default: golden/)", Path, metavar="DIR"),
    Option(
        "results-dir",
        "where runs are kept, one folder each; they are the history (default: results/)",
        Path,
        aliases=("history",),
        metavar="DIR",
    ),  # fmt: skip
    Option(
        "keep-runs",
        "keep at most N runs like this one (same hardware, checkpoint and workload) in the results folder: the oldest "
        "beyond N are removed once this run is kept; other runs are never touched (default: keep all)",
        positive_int,
    ),  # fmt: skip
    Option(
        "markdown",
        "append the report (or verdict) as Markdown here (default: $GITHUB_STEP_SUMMARY)",
        Path,
        metavar="FILE",
    ),
    Option("pyproject", "read the thresholds from here (default: pyproject.toml)", Path, metavar="FILE"),
)


def add_options(addoption: Callable[..., Any], prefix: str, options: tuple[Option, ...]) -> None:
    """Add `options` with `prefix` ("--bark-" for pytest, "--" for the CLI) through `addoption`."""
    for o in options:
        names = [prefix + n for n in (o.name, *o.aliases)]
        if o.flag:
            addoption(*names, dest=o.dest, action="store_true", help=o.help)
        elif o.extend:
            addoption(*names, dest=o.dest, action="extend", type=o.type, default=None, metavar=o.metavar, help=o.help)
        else:
            addoption(*names, dest=o.dest, type=o.type, default=None, metavar=o.metavar, help=o.help)


def cli_spelling(argv: list[str]) -> list[str]:
    """`argv` with each option spelled as pytest spells it (`--bark-save-golden`, `--bark-tokens=8`) respelled as
    the CLI does (`--save-golden`), up to a `--` (what follows is compare-stacks' pytest arguments). The suite's
    messages name pytest's spelling; so they hold for `python -m perf_utils` too."""
    names = {n for o in RUN + FINISH for n in (o.name, *o.aliases)}
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        head, eq, value = arg.partition("=")
        name = head.removeprefix("--bark-")
        out.append(f"--{name}{eq}{value}" if head.startswith("--bark-") and name in names else arg)
    return out


Get = Callable[[str], Any]  # reads an option by its dest: pytest's config.getoption, or vars(namespace).get


@dataclass(frozen=True)
class RunOptions:
    """What to measure and how; None means "the device's default" (resolved by `measure.run.RunPlan.of`)."""

    checkpoint: str | None
    device: str
    configs: list[str]
    batch_sizes: list[int]
    tokens: int | None
    rounds: int | None
    invocations: int | None
    warmup: int | None
    saving_baseline: bool  # a baseline takes more invocations by default (measure.run.BASELINE_INVOCATIONS)
    threads: int | None
    shard: Shard | None
    fidelity: bool
    allow_busy_gpu: bool

    @classmethod
    def read(cls, get: Get) -> RunOptions:
        tokens = get("bark_tokens")
        if tokens is None and os.environ.get(ENV_TOKENS):
            try:
                tokens = semantic_tokens(os.environ[ENV_TOKENS])
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"{ENV_TOKENS}={exc}") from None
        return cls(
            checkpoint=get("bark_checkpoint"),
            device=get("bark_device") or "auto",
            configs=list(get("bark_configs") or []),
            batch_sizes=list(get("bark_batch_sizes") or DEFAULT_BATCH_SIZES),
            tokens=tokens,
            rounds=get("bark_rounds"),
            invocations=get("bark_invocations"),
            warmup=get("bark_warmup"),
            saving_baseline=bool(get("bark_save_baseline") or get("bark_add_session")),
            threads=get("bark_threads"),
            shard=get("bark_shard"),
            fidelity=not get("bark_no_fidelity"),
            allow_busy_gpu=bool(get("bark_allow_busy_gpu")),
        )


@dataclass(frozen=True)
class FinishChoices:
    """What to do once a run is measured; paths left None take the entry point's default."""

    compare: bool
    baselines_dir: Path | None
    baseline: Path | None
    force_compare: bool
    allow_lost: frozenset[str]
    fail_on_noisy: bool
    time_threshold: float | None  # over pyproject's time and throughput thresholds
    per_host_probe: bool | None  # None: as the thresholds say for the device kind
    remeasure_s: float
    save_baseline: bool
    add_session: bool  # adopt as one more session of the baseline (`store.with_session`)
    save_golden: bool
    golden_dir: Path | None
    results_dir: Path | None
    markdown: Path | None
    pyproject: Path | None
    keep_runs: int | None = None  # None: every kept run stays

    @classmethod
    def read(cls, get: Get) -> FinishChoices:
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        return cls(
            compare=bool(get("bark_compare")),
            baselines_dir=get("bark_baselines_dir"),
            baseline=get("bark_baseline"),
            force_compare=bool(get("bark_force_compare")),
            allow_lost=frozenset(get("bark_allow_lost") or ()),
            fail_on_noisy=bool(get("bark_fail_on_noisy")),
            time_threshold=get("bark_time_threshold"),
            per_host_probe=get("bark_time_per_host_probe"),
            remeasure_s=get("bark_remeasure_noisy") or 0.0,
            save_baseline=bool(get("bark_save_baseline")),
            add_session=bool(get("bark_add_session")),
            save_golden=bool(get("bark_save_golden")),
            golden_dir=get("bark_golden_dir"),
            results_dir=get("bark_results_dir"),
            keep_runs=get("bark_keep_runs"),
            markdown=get("bark_markdown") or (Path(summary) if summary else None),
            pyproject=get("bark_pyproject"),
        )
