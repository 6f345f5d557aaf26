"""What a run produces: per configuration and batch size, every round's numbers, plus where they came from.

The same shape is saved after every run and stored as a baseline, so a baseline is simply an adopted run.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import asdict, dataclass, field
from typing import Any

from perf_utils.stats import Summary, summarize

SCHEMA_VERSION = 1
RUN_FILE = "run.json"  # a kept run is results/<run>/run.json; its report lies beside it


def benchmark_id(config: str, batch_size: int) -> str:
    return f"bs{batch_size}-{config}"


@dataclass
class ConfigResult:
    config: str
    batch_size: int
    status: str  # "ok" | "unavailable" | "failed"
    reason: str | None = None
    rounds: list[dict[str, float]] = field(default_factory=list)
    counts: dict[str, int] | None = None
    load_s: float | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    fidelity: dict[str, Any] | None = None

    @property
    def id(self) -> str:
        return benchmark_id(self.config, self.batch_size)

    def values(self, metric: str) -> list[float]:
        return [r[metric] for r in self.rounds if metric in r]

    def summary(self, metric: str) -> Summary:
        return summarize(self.values(metric))

    def metrics(self) -> list[str]:
        seen: dict[str, None] = {}
        for r in self.rounds:
            seen.update(dict.fromkeys(r))
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunRecord:
    hardware: str
    device: str
    checkpoint: dict[str, Any]
    workload: dict[str, Any]
    environment: dict[str, Any]
    results: list[ConfigResult] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    suite_version: str = ""

    def by_id(self) -> dict[str, ConfigResult]:
        return {r.id: r for r in self.results}

    def measured(self, batch_size: int | None = None) -> list[ConfigResult]:
        """The results that ran (status ok), in run order; of one batch size if given."""
        return [r for r in self.results if r.status == "ok" and batch_size in (None, r.batch_size)]

    @property
    def device_type(self) -> str:
        """ "cuda" for "cuda:1": what per-device thresholds are keyed by."""
        return self.device.split(":")[0]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["results"] = [r.to_dict() for r in self.results]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Trusts `data`'s shape: validate it first (`baselines.validate`)."""
        fields = {k: v for k, v in data.items() if k != "results"}
        return cls(**fields, results=[ConfigResult(**r) for r in data.get("results", [])])
