"""What a run produces: per benchmark (configuration x batch size), every round's numbers, plus where they came
from (hardware, checkpoint, workload, software).

The same shape is kept after every run and stored as a baseline, so a baseline is simply an adopted run.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as _dt
from dataclasses import dataclass, field, fields
from typing import Any

from perf_utils.record.fidelity import Fidelity
from perf_utils.record.golden import Fingerprint
from perf_utils.record.metrics import memory_metric
from perf_utils.record.stats import Summary, summarize

# 2: the fp32 eager configuration is named `fp32` (it was `baseline`); 3: the workload records its prompt order;
# 4: a baseline may hold several sessions (`sessions`, per round and per record); 5: rounds carry their invocation's
# median host probe (`metrics.INVOCATION_PROBE`)
SCHEMA_VERSION = 5
RUN_FILE = "run.json"  # a kept run is results/<run>/run.json; its report lies beside it
# Configurations renamed over the suite's versions: old records are migrated when read, old names on the
# command line are taken with a note. `baseline` meant both this configuration and the stored file.
RENAMED_CONFIGS = {"baseline": "fp32"}
REFERENCE_CONFIG = "fp32"  # what the report's "vs fp32" columns and the ratios are taken against
OK, UNAVAILABLE, FAILED = "ok", "unavailable", "failed"
# The libraries a software stack is named by: every versions line shows them, a baseline of other versions gets a
# note, and a stack taken from a record pins them (`tools.upgrade`).
STACK_PACKAGES = ("torch", "transformers", "optimum", "accelerate")


def benchmark_id(config: str, batch_size: int) -> str:
    return f"bs{batch_size}-{config}"


@dataclass(frozen=True)
class Shard:
    """The K-th of N parts of a run's benchmarks (`--bark-shard K/N`, 1-based as a CI matrix counts). A sharded
    run records it (`Schedule.shard`), so merging can tell a missing shard from a complete run."""

    k: int
    n: int

    @classmethod
    def parse(cls, spec: str) -> Shard:
        try:
            k, n = (int(x) for x in spec.split("/"))
        except ValueError:
            raise ValueError(f"shard {spec!r} must look like K/N, e.g. 2/4") from None
        if not 1 <= k <= n:
            raise ValueError(f"shard {spec!r}: K must be between 1 and N")
        return cls(k, n)

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"


@dataclass
class BenchmarkResult:
    """One benchmark: a configuration at a batch size."""

    config: str
    batch_size: int
    status: str  # OK | UNAVAILABLE | FAILED
    reason: str | None = None
    rounds: list[dict[str, float]] = field(default_factory=list)
    counts: dict[str, int] | None = None
    load_s: float | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    fidelity: Fidelity | None = None
    warmup: int | None = None  # warm-up calls it took to reach a steady state (the most of any invocation)
    # The invocation (a fresh model load, with its own warm-up) each round came from; None: all from one.
    invocations: list[int] | None = None
    # The session (index into `RunRecord.sessions`) each round came from, in a baseline taken in several
    # (`store.with_session`); None: all from one. Invocation labels stay unique across sessions.
    sessions: list[int] | None = None
    # The exception of a failed benchmark, for whoever ran it (pytest shows its traceback); never stored.
    error: BaseException | None = field(default=None, repr=False, compare=False)

    @property
    def id(self) -> str:
        return benchmark_id(self.config, self.batch_size)

    @property
    def ran(self) -> bool:
        return self.status == OK

    def values(self, metric: str) -> list[float]:
        return [r[metric] for r in self.rounds if metric in r]

    def groups(self, metric: str) -> list[list[float]]:
        """The metric's rounds grouped by invocation, in order: the unit the gate's uncertainty is built from."""
        if not self.invocations:
            return [self.values(metric)] if self.values(metric) else []
        grouped: dict[int, list[float]] = {}
        for inv, r in zip(self.invocations, self.rounds, strict=True):
            if metric in r:
                grouped.setdefault(inv, []).append(r[metric])
        return list(grouped.values())

    def session_groups(self, metric: str) -> list[list[list[float]]]:
        """`groups(metric)` split by session, in session order: what the machine's drift between sessions is
        measured from (`gate.sessions`). One session when the rounds carry no session labels."""
        if not self.sessions:
            return [self.groups(metric)] if self.values(metric) else []
        parts = (
            self.only([i for i, label in enumerate(self.sessions) if label == s]) for s in sorted(set(self.sessions))
        )
        return [g for g in (part.groups(metric) for part in parts) if g]

    def only(self, keep: list[int]) -> BenchmarkResult:
        """This result with only the rounds at positions `keep`, each with its invocation and session label."""

        def pick(labels: list[int] | None) -> list[int] | None:
            return [labels[i] for i in keep] if labels else None

        return dataclasses.replace(
            self,
            rounds=[self.rounds[i] for i in keep],
            invocations=pick(self.invocations),
            sessions=pick(self.sessions),
        )

    def by_trial(self) -> dict[tuple[int, int], dict[str, float]]:
        """Each round under (its invocation, its position within the invocation): the trial it was measured in."""
        invocations = self.invocations or [0] * len(self.rounds)
        seen: dict[int, int] = {}
        out = {}
        for inv, r in zip(invocations, self.rounds, strict=True):
            out[(inv, seen.get(inv, 0))] = r
            seen[inv] = seen.get(inv, 0) + 1
        return out

    def summary(self, metric: str) -> Summary:
        return summarize(self.values(metric))

    def median(self, metric: str) -> float | None:
        """The median over the measured rounds; None when this benchmark did not run or measure `metric`."""
        return self.summary(metric).median if self.ran and self.values(metric) else None

    def metrics(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rounds:
            seen.update(dict.fromkeys(r))
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("error", "fidelity")}
        data = copy.deepcopy(data)
        data["fidelity"] = self.fidelity.to_dict() if self.fidelity else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchmarkResult:
        fid = data.get("fidelity")
        return cls(**{**data, "fidelity": Fidelity.from_dict(fid) if fid else None})

    @classmethod
    def of_invocations(cls, parts: list[BenchmarkResult]) -> BenchmarkResult:
        """One benchmark measured in several invocations (part i is invocation i): their rounds together, each
        labelled with its invocation; counts, load time and fidelity from the first. One that did not run
        makes the whole benchmark fail, saying which invocation."""
        first = parts[0]
        for i, part in enumerate(parts):
            if part.status == UNAVAILABLE:  # decided before measuring: the same in every invocation
                return part
            if not part.ran:
                where = f" (invocation {i + 1} of {len(parts)})" if len(parts) > 1 else ""
                return dataclasses.replace(part, reason=f"{part.reason}{where}")
        if len(parts) == 1:
            return first
        return dataclasses.replace(
            first,
            rounds=[r for p in parts for r in p.rounds],
            invocations=[i for i, p in enumerate(parts) for _ in p.rounds],
            warmup=max((p.warmup for p in parts if p.warmup is not None), default=None),
        )

    def appended(self, part: BenchmarkResult, invocation: int) -> BenchmarkResult:
        """This result with one more invocation's rounds (a re-measure of a `noisy` benchmark), labelled
        `invocation`; counts, load time and fidelity stay the first invocation's. A part that did not run makes
        the whole benchmark fail, saying which invocation."""
        if not part.ran:
            return dataclasses.replace(part, reason=f"{part.reason} (invocation {invocation + 1}, a re-measure)")
        labels = self.invocations or [0] * len(self.rounds)
        return dataclasses.replace(
            self,
            rounds=[*copy.deepcopy(self.rounds), *part.rounds],
            invocations=[*labels, *[invocation] * len(part.rounds)],
            sessions=[*self.sessions, *[self.sessions[-1]] * len(part.rounds)] if self.sessions else None,
            warmup=max((w for w in (self.warmup, part.warmup) if w is not None), default=None),
        )


# How an invocation's process began, the schedule's `workers`: the caller itself (`--bark-invocations 1`), or a
# worker process, a fresh interpreter or forked from the zygote (`measure.forks`).
IN_PROCESS, FRESH, FORKED = "this process", "fresh interpreter", "forked from the zygote"


@dataclass
class Remeasured:
    """Invocations `--bark-remeasure-noisy` added to a run, and the benchmarks the gate called noisy then."""

    invocations: int = 0
    noisy: list[str] = field(default_factory=list)


@dataclass
class Schedule:
    """How a run's rounds were taken (`measure.run`): the gate, the store's notes, re-measuring and the report read
    it; a record of an older version may lack any field (their defaults say what such a run did)."""

    invocations: int = 1  # processes, one after the other; 1: the calling process
    rounds: int | None = None  # measured rounds per invocation
    interleaved: bool = False  # every benchmark once per trial, or configuration by configuration (`note` says why)
    seed: int | None = None
    workers: str | None = None  # how the invocations' processes began (IN_PROCESS, FRESH, FORKED; "; "-joined)
    note: str | None = None
    session: str | None = None  # compare-stacks: the alternating session both sides were measured in
    alternated: list[str] | None = None  # compare-stacks: the two stacks, in order
    remeasured: Remeasured | None = None
    interrupted: str | None = None  # where the run was cut short (Ctrl-C, a time limit)
    shard: str | None = None  # "K/N": the part of a sharded run's benchmarks it measured (`Shard`)
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know, kept as they were

    @property
    def in_caller(self) -> bool:
        """Measured in the calling process rather than in worker processes (`RunRecord.in_caller`)."""
        return (self.workers or (IN_PROCESS if self.invocations == 1 else FRESH)) == IN_PROCESS

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        extra = data.pop("extra")
        return {**extra, **{k: v for k, v in data.items() if v is not None}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        known = {f.name for f in fields(cls)} - {"extra"}
        more = data.get("remeasured")
        return cls(
            **{k: v for k, v in data.items() if k in known and k != "remeasured"},
            remeasured=Remeasured(**more) if more else None,
            extra={k: v for k, v in data.items() if k not in known},
        )


def measured_in(in_caller: bool, processes: int | None = None) -> str:
    """Where rounds were measured, in words (`RunRecord.in_caller`; `processes`: how many workers, when known):
    the one phrase the store's schedule note and the gate's not-judged peaks both use."""
    if in_caller:
        return "the calling process"
    return f"{processes} worker process{'es' if processes > 1 else ''}" if processes else "worker processes"


@dataclass
class RunRecord:
    hardware: str
    device: str
    checkpoint: dict[str, Any]
    workload: dict[str, Any]
    environment: dict[str, Any]
    results: list[BenchmarkResult] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    suite_version: str = ""
    # How the rounds were taken; None until the run loop has rounds to record.
    schedule: Schedule | None = None
    # When each session of a baseline taken in several was measured (`store.with_session`); the rounds' `sessions`
    # index it. None: one session, this record's `created`.
    sessions: list[str] | None = None
    # The fingerprint of this run's fp32 eager reference (record.golden); None when fidelity was off.
    reference: Fingerprint | None = None
    # Set when this record was read from an older schema and migrated (says what changed); never stored.
    migrated: str | None = field(default=None, compare=False)

    def by_id(self) -> dict[str, BenchmarkResult]:
        return {r.id: r for r in self.results}

    def put(self, result: BenchmarkResult) -> BenchmarkResult:
        """Add a result, replacing an earlier one of the same benchmark."""
        self.results = [r for r in self.results if r.id != result.id] + [result]
        return result

    def measured(self, batch_size: int | None = None) -> list[BenchmarkResult]:
        """The results that ran (status ok), in run order; of one batch size if given."""
        return [r for r in self.results if r.ran and batch_size in (None, r.batch_size)]

    def memory_metric(self) -> str:
        """The memory figure of this run, as measured anywhere in it (`metrics.memory_metric`): what its tables
        show and what a comparison with it judges."""
        return memory_metric({m for r in self.measured() for m in r.metrics()})

    def failed(self) -> list[str]:
        """The ids of the benchmarks that failed: a run with any is never adopted as a baseline."""
        return [r.id for r in self.results if r.status == FAILED]

    def batch_sizes(self) -> list[int]:
        return sorted({r.batch_size for r in self.measured()})

    @property
    def interrupted(self) -> str | None:
        """Where the run was cut short (Ctrl-C, a time limit), if it was: it holds what it measured before, and
        is judged but never adopted (`finish`)."""
        return self.schedule.interrupted if self.schedule else None

    @property
    def in_caller(self) -> bool:
        """Whether the rounds were measured in the calling process rather than in worker processes. What else a
        process holds moves its RSS rise (+45% to +90% for tiny at bs1 here), so the two kinds' RSS rises differ by
        where they were measured, not by what Bark did (`gate.compare`); counted host allocations do not."""
        return (self.schedule or Schedule()).in_caller

    def mark_interrupted(self, where: str) -> None:
        self.schedule = dataclasses.replace(self.schedule or Schedule(), interrupted=where)

    @property
    def device_type(self) -> str:
        """ "cuda" for "cuda:1": what per-device thresholds are keyed by."""
        return self.device.split(":")[0]

    def to_dict(self) -> dict[str, Any]:
        skip = ("results", "migrated", "reference", "schedule")
        data = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name not in skip}
        data["schedule"] = self.schedule.to_dict() if self.schedule else None
        data["reference"] = self.reference.to_dict() if self.reference else None
        data["results"] = [r.to_dict() for r in self.results]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Trusts `data`'s shape: validate it first (`store.validate`)."""
        top = {k: v for k, v in data.items() if k not in ("results", "reference", "schedule")}
        ref, schedule = data.get("reference"), data.get("schedule")
        return cls(
            **top,
            schedule=Schedule.from_dict(schedule) if schedule is not None else None,
            results=[BenchmarkResult.from_dict(r) for r in data.get("results", [])],
            reference=Fingerprint.from_dict(ref) if ref else None,
        )

    def copy(self) -> RunRecord:
        return RunRecord.from_dict(self.to_dict())
