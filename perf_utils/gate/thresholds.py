"""How large and how certain a change must be before the gate calls it (asv's idea: significant AND large).

Defaults come from measuring this suite's own noise (`python -m perf_utils gate-quality`, see README);
a project overrides them in `pyproject.toml` under `[tool.bark-perf.thresholds]`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path


class ThresholdsError(ValueError):
    pass


@dataclass(frozen=True)
class Thresholds:
    # Minimum relative change of the median, per metric kind (see metrics.Metric.kind).
    time: float = 0.15
    throughput: float = 0.15
    memory: float = 0.05
    energy: float = 0.10
    # A configuration's latency or peak memory relative to fp32 in the same run (record.ratios).
    ratio: float = 0.10
    # Time and throughput between two stacks measured in alternating trials (compare-stacks): each trial's ratio
    # cancels the drift that dominates separate runs, so a much smaller change is decidable.
    paired: float = 0.04
    # Memory changes smaller than this many MB are never called (allocator rounding, page granularity).
    memory_floor_mb: float = 4.0
    # Each end of the bootstrap interval of a change leaves out this much (0.01: a 98% interval).
    alpha: float = 0.01
    # Judge latency and throughput per host probe (`gate.hostspeed`: each round divided by the median time of
    # its invocation's fixed CPU work): on where the machine's own speed drifts between the baseline's day and
    # today (the shared CPU). Not for paired sessions, whose per-trial ratios cancel the drift already.
    time_per_host_probe: bool = False
    # Judged per host probe, the probe tracks the host's speed while the benchmark's median probe is within
    # `host_probe_band` of the baseline's. Beyond it a loaded host slowed Bark more than the probe (measured: probe
    # +44% to +158%, Bark per probe -1% to +29%; docs/gate-quality.md, "When the host itself moved"), so time and
    # throughput are called only past `host_probe_slack` x the probe's change on top of their threshold, `noisy` short
    # of it.
    host_probe_band: float = 0.25
    host_probe_slack: float = 0.5
    # How far the machine's level of time moves between a baseline and a run taken at another time (SD of the log
    # level), beyond what the run's own invocations show: minutes apart it moved 4-6% here, days apart 8%
    # (docs/gate-quality.md, "A stored baseline from another day"). Added to time and throughput intervals
    # (`gate.compare.with_drift`) so an offset of that size is `noisy`, not a regression. Not to paired sessions or
    # ratios to fp32: drift-free.
    drift: float = 0.0
    # A baseline taken in several sessions (`--bark-add-session`) measures the drift itself (`gate.sessions`);
    # pyproject's `drift` then counts as this many sessions' worth of evidence, so a few lucky sessions cannot
    # talk the gate into a drift much smaller than the machine's.
    drift_prior_sessions: float = 4.0

    def for_pairs(self) -> Thresholds:
        """The thresholds a paired comparison is judged at: `paired` for time and throughput."""
        return replace(self, time=self.paired, throughput=self.paired)

    def with_time(self, least: float | None) -> Thresholds:
        """Time and throughput judged at `least` (`--bark-time-threshold`); None keeps these."""
        return self if least is None else replace(self, time=least, throughput=least)

    def per_host_probe(self, asked: bool | None) -> bool:
        """Whether time is judged per host probe: as asked (`--bark-time-per-host-probe`), else as set here for the
        device kind. The gate and the history's trends read time alike."""
        return self.time_per_host_probe if asked is None else asked

    def widened(self, by: float) -> Thresholds:
        """Time and throughput judged at `by` more than these (what the host may have added: `host_probe_slack`)."""
        return replace(self, time=self.time + by, throughput=self.throughput + by)

    def beyond_probe_band(self, probe_change: float) -> bool:
        """Whether the host's probe moved too far from the baseline's for time per probe to track Bark."""
        return abs(probe_change) > self.host_probe_band

    def min_effect(self, kind: str) -> float | None:
        return getattr(self, kind, None) if kind in {"time", "throughput", "memory", "energy", "ratio"} else None

    def large(self, kind: str, old: float, new: float, mb_per_unit: float | None = None) -> bool:
        """Whether a move from `old` to `new` passes this kind's minimum effect (and, for memory, the floor in MB).
        The gate also wants it significant; history trends are judged by this alone. The effect is a ratio, alike
        both ways (asv's factor): at 15%, x1.15 and /1.15 (-13.0%). So a latency +15% and the throughput -13.0% it
        is (samples per second of the same rounds) are called alike; a decrease is called from -13.0%, not -15%.
        `mb_per_unit`: the MB one unit of a figure that is not itself in MB stands for (a peak / fp32's peak: fp32's
        peak), so a move of a few MB in a small peak is not called through its ratio either."""
        min_effect = self.min_effect(kind)
        if min_effect is None:
            return False
        if old > 0 and new >= 0:
            past = new >= old * (1 + min_effect) or new <= old / (1 + min_effect)
        else:
            past = abs((new - old) / old) >= min_effect if old else new != old
        if kind == "memory":
            mb_per_unit = 1.0
        return past and (mb_per_unit is None or abs(new - old) * mb_per_unit >= self.memory_floor_mb)

    @classmethod
    def from_pyproject(cls, path: Path, device_type: str | None = None) -> Thresholds:
        """Reads `[tool.bark-perf.thresholds]`, then `[tool.bark-perf.thresholds.<device type>]` on top (a shared
        CPU machine and a dedicated GPU runner need different time thresholds). Unknown keys, non-numbers and a
        switch that is not true or false are errors naming the key."""
        if not path.is_file():
            return cls()
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ThresholdsError(f"{path}: not valid TOML ({exc})") from None
        table = data.get("tool", {}).get("bark-perf", {}).get("thresholds", {})
        base = {k: v for k, v in table.items() if not isinstance(v, dict)}
        override = table.get(device_type, {}) if device_type else {}
        merged = {**_checked(path, "", base), **_checked(path, f".{device_type}", override)}
        return replace(cls(), **merged)


def _checked(path: Path, suffix: str, table: dict) -> dict[str, float | bool]:
    switches = {f.name for f in fields(Thresholds) if isinstance(f.default, bool)}
    known = {f.name for f in fields(Thresholds)}
    where = f"{path}: [tool.bark-perf.thresholds{suffix}]"
    out: dict[str, float | bool] = {}
    for key, value in table.items():
        if key not in known:
            raise ThresholdsError(f"{where} has unknown key {key!r}; known: {', '.join(sorted(known))}")
        if key in switches:
            if not isinstance(value, bool):
                raise ThresholdsError(f"{where}.{key} must be true or false; got {value!r}")
            out[key] = value
        elif not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise ThresholdsError(f"{where}.{key} must be a number >= 0; got {value!r}")
        else:
            out[key] = float(value)
    return out
