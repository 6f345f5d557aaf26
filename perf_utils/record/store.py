"""Where records live: stored baselines and kept runs, their schema, strict loading, migration of older
records, and atomic writes.

Baselines: `baselines/<hardware>/<checkpoint>.json`, one adopted run per hardware and checkpoint. Kept runs:
`results/<time>-<hardware>-<checkpoint>/run.json`, one folder per run (its report goes beside it; the folders
are the history). A bad file is an error that names the file and the field; a write goes to a temporary file that
replaces the old one only once complete, so a crash or Ctrl-C never leaves a damaged baseline.
"""

from __future__ import annotations

import json
import shutil
import statistics
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jsonschema

from perf_utils.record import atomic
from perf_utils.record.metrics import HOST_ALLOC_PEAK, HOST_PROBE, INVOCATION_PROBE
from perf_utils.record.record import (
    REFERENCE_CONFIG,
    RENAMED_CONFIGS,
    RUN_FILE,
    SCHEMA_VERSION,
    STACK_PACKAGES,
    BenchmarkResult,
    RunRecord,
    Schedule,
    Shard,
    measured_in,
)

_NUMBER_MAP = {"type": "object", "additionalProperties": {"type": "number"}}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "bark-perf run record / baseline",
    "type": "object",
    "required": ["schema_version", "hardware", "device", "checkpoint", "workload", "environment", "results"],
    "properties": {
        "schema_version": {"type": "integer"},
        "hardware": {"type": "string", "minLength": 1},
        "device": {"type": "string"},
        "created": {"type": "string"},
        "suite_version": {"type": "string"},
        "checkpoint": {
            "type": "object",
            "required": ["key", "kind"],
            "properties": {
                "key": {"type": "string", "minLength": 1},
                "kind": {"enum": ["tiny", "random", "hub", "local"]},
                "revision": {"type": ["string", "null"]},
            },
        },
        "workload": {
            "type": "object",
            "required": ["n_tokens", "prompts_sha256", "seed", "sampling"],
            "properties": {
                "n_tokens": {"type": "integer", "minimum": 1},
                "prompts_sha256": {"type": "string"},
                "seed": {"type": "integer"},
                "sampling": {"type": "object"},
            },
        },
        "environment": {"type": "object"},
        "schedule": {  # record.Schedule; keys it does not know are kept as they are
            "type": ["object", "null"],
            "properties": {
                "invocations": {"type": "integer", "minimum": 1},
                "rounds": {"type": ["integer", "null"], "minimum": 1},
                "interleaved": {"type": "boolean"},
                "seed": {"type": ["integer", "null"]},
                "workers": {"type": ["string", "null"]},
                "note": {"type": ["string", "null"]},
                "session": {"type": ["string", "null"]},
                "alternated": {"type": ["array", "null"], "items": {"type": "string"}},
                "remeasured": {
                    "type": ["object", "null"],
                    "required": ["invocations", "noisy"],
                    "additionalProperties": False,
                    "properties": {
                        "invocations": {"type": "integer", "minimum": 0},
                        "noisy": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "interrupted": {"type": ["string", "null"]},
                "shard": {"type": ["string", "null"], "pattern": "^[0-9]+/[0-9]+$"},
            },
        },
        "sessions": {"type": ["array", "null"], "items": {"type": "string"}, "minItems": 1},
        "reference": {"type": ["object", "null"]},
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["config", "batch_size", "status", "rounds"],
                "additionalProperties": False,
                "properties": {
                    "config": {"type": "string", "minLength": 1},
                    "batch_size": {"type": "integer", "minimum": 1},
                    "status": {"enum": ["ok", "unavailable", "failed"]},
                    "reason": {"type": ["string", "null"]},
                    "rounds": {"type": "array", "items": _NUMBER_MAP},
                    "counts": {"type": ["object", "null"], "additionalProperties": {"type": "integer"}},
                    "load_s": {"type": ["number", "null"]},
                    "changes": {"type": "object"},
                    "fidelity": {"type": ["object", "null"]},
                    "warmup": {"type": ["integer", "null"], "minimum": 0},
                    "invocations": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 0}},
                    "sessions": {"type": ["array", "null"], "items": {"type": "integer", "minimum": 0}},
                },
            },
        },
    },
}


class BaselineError(Exception):
    """A baseline file that cannot be used; names the file and, where there is one, the field."""

    def __init__(self, path: Path, message: str, field: str | None = None) -> None:
        self.path, self.field = path, field
        where = f"{path}: field {field!r}: " if field else f"{path}: "
        super().__init__(where + message)


def _field_path(parts: Any) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _migrate_v1(data: dict[str, Any]) -> list[str]:
    """Version 1 named the fp32 eager configuration `baseline`: renamed, never a crash."""
    notes = []
    for result in data.get("results", []):
        if isinstance(result, dict) and (new := RENAMED_CONFIGS.get(result.get("config"))):
            notes.append(f"configuration {result['config']!r} is now {new!r}")
            result["config"] = new
    data["schema_version"] = 2
    return sorted(set(notes))


def _migrate_v2(data: dict[str, Any]) -> list[str]:
    """Version 2 batched the first b of the 8 prompts, b at most 8: the cyclic order, unnamed."""
    if isinstance(data.get("workload"), dict):
        data["workload"].setdefault("prompt_order", "cyclic")
    data["schema_version"] = 3
    return ["the workload's prompt order is now recorded (the same: cyclic)"]


def _migrate_v3(data: dict[str, Any]) -> list[str]:
    """Version 3 had one session per record: read as it was (no labels mean one session)."""
    data["schema_version"] = 4
    return []


def _migrate_v4(data: dict[str, Any]) -> list[str]:
    """Version 4 rounds carried only their own host probe. Where a session's invocations can be matched across
    benchmarks (every benchmark measured in it has the same invocation labels: a plain run, or sessions that all
    measured the same benchmarks), each round gets its invocation's median probe over every benchmark
    (`INVOCATION_PROBE`, what new runs record); elsewhere the gate keeps judging by the rounds' own probes."""
    data["schema_version"] = 5
    labelled = _probed_rounds(data)
    label_sets: dict[int, set[frozenset[int]]] = {}
    for _, keys in labelled:
        for session in {s for s, _ in keys}:
            label_sets.setdefault(session, set()).add(frozenset(i for s, i in keys if s == session))
    matched = {session for session, sets in label_sets.items() if len(sets) == 1}
    probes: dict[tuple[int, int], list[float]] = {}
    for rounds, keys in labelled:
        for x, key in zip(rounds, keys, strict=True):
            if key[0] in matched:
                probes.setdefault(key, []).append(x[HOST_PROBE])
    speed = {key: statistics.median(values) for key, values in probes.items()}
    for rounds, keys in labelled:
        for x, key in zip(rounds, keys, strict=True):
            if key in speed:
                x[INVOCATION_PROBE] = speed[key]
    return ["rounds carry their invocation's median host probe over every benchmark"] if speed else []


def _probed_rounds(data: dict[str, Any]) -> list[tuple[list[dict], list[tuple[int, int]]]]:
    """Each benchmark's rounds that all carry a host probe, with each round's (session, invocation)."""
    labelled = []
    for r in data.get("results", []):
        rounds = r.get("rounds") if isinstance(r, dict) else None
        if not isinstance(rounds, list) or not rounds:
            continue
        if not all(isinstance(x, dict) and isinstance(x.get(HOST_PROBE), int | float) for x in rounds):
            continue
        inv, ses = r.get("invocations") or [0] * len(rounds), r.get("sessions") or [0] * len(rounds)
        if len(inv) == len(ses) == len(rounds):
            labelled.append((rounds, list(zip(ses, inv, strict=True))))
    return labelled


MIGRATIONS = {1: _migrate_v1, 2: _migrate_v2, 3: _migrate_v3, 4: _migrate_v4}  # from version N to N+1


def validate(data: Any, path: Path) -> RunRecord:
    if not isinstance(data, dict):
        raise BaselineError(path, f"expected a JSON object at the top level, found {type(data).__name__}")
    version = found = data.get("schema_version")
    notes: list[str] = []
    while isinstance(version, int) and version in MIGRATIONS:
        notes += MIGRATIONS[version](data)
        version = data["schema_version"]
    if isinstance(version, int) and version != SCHEMA_VERSION:
        raise BaselineError(
            path, f"unknown schema version {version} (this suite reads {SCHEMA_VERSION})", "schema_version"
        )
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data))
    if error is not None:
        raise BaselineError(path, error.message, _field_path(error.absolute_path))
    record = RunRecord.from_dict(data)
    if notes:
        record.migrated = f"{path}: an older record (schema {found}), read as schema {SCHEMA_VERSION}: " + "; ".join(
            notes
        )
    return record


def load(path: Path) -> RunRecord:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BaselineError(path, f"cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BaselineError(path, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    return validate(data, path)


def file_name(checkpoint_key: str) -> str:
    return checkpoint_key.replace("/", "__").replace(":", "-") + ".json"


def path_for(root: Path, hardware: str, checkpoint_key: str) -> Path:
    return root / hardware / file_name(checkpoint_key)


def baseline_for(root: Path, record: RunRecord) -> Path:
    """Where the baseline `record` is judged against (and saved as) lives under `root`: its hardware and checkpoint."""
    return path_for(root, record.hardware, record.checkpoint["key"])


def other_hardware(root: Path, hardware: str, checkpoint_key: str) -> list[Path]:
    """Baselines of the same checkpoint measured on other hardware (never compared silently)."""
    if not root.is_dir():
        return []
    name = file_name(checkpoint_key)
    return sorted(p for p in root.glob(f"*/{name}") if p.parent.name != hardware)


def incompatibilities(baseline: RunRecord, current: RunRecord) -> list[str]:
    """Why these two runs must not be compared; empty when they may."""
    problems = []
    if baseline.hardware != current.hardware:
        problems.append(f"hardware differs: baseline {baseline.hardware}, now {current.hardware}")
    for part in ("key", "revision"):
        old_ck, new_ck = baseline.checkpoint.get(part), current.checkpoint.get(part)
        if old_ck != new_ck:
            problems.append(f"checkpoint {part} differs: baseline {old_ck}, now {new_ck}")
    old_w, new_w = baseline.workload, current.workload
    if old_w != new_w:
        diff = sorted(k for k in {*old_w, *new_w} if old_w.get(k) != new_w.get(k))
        detail = ", ".join(f"{k} {old_w.get(k)} -> {new_w.get(k)}" for k in diff)
        problems.append(f"workload differs: {detail}")
    return problems


def _schedule(record: RunRecord) -> str:
    s = record.schedule or Schedule()
    how = "interleaved" if s.interleaved else "configuration by configuration"
    return f"{how}, in {measured_in(s.in_caller, s.invocations)}"


def _kind_of_schedule(record: RunRecord) -> tuple[bool, bool]:
    """What a comparison depends on: interleaved or not, in the calling process or in workers (how many does not
    matter: a baseline takes more invocations than a run on purpose, `measure.run.BASELINE_INVOCATIONS`)."""
    s = record.schedule or Schedule()
    return s.interleaved, s.in_caller


def schedule_notes(baseline: RunRecord, current: RunRecord) -> list[str]:
    """Schedules that differ do not forbid a comparison, but change what it can say: said, never silent."""
    if _kind_of_schedule(baseline) == _kind_of_schedule(current):
        return []
    what = (
        "so RSS rises are not compared (what else a process holds moves them), and an interval with one side in "
        "the calling process cannot see the spread between processes"
        if baseline.in_caller != current.in_caller
        else "RSS rises of small calls depend on what else the process holds"
    )
    return [
        f"note: the baseline's rounds were taken {_schedule(baseline)}, this run's {_schedule(current)}; {what}: "
        "retake the baseline to compare like with like"
    ]


# oneDNN's kernel cache: the record's `environment` key, and oneDNN's own default (what a record without the key
# had, unless its user set the variable). How and why the suite sizes it: `measure.settings`.
ONEDNN_CACHE_KEY = "onednn_primitive_cache"
ONEDNN_DEFAULT_CACHE = 1024


def setting_notes(baseline: RunRecord, current: RunRecord) -> list[str]:
    """A CPU baseline whose processes kept another number of oneDNN kernels: where the interleaved cases need more
    than the smaller keeps (half precision on an AMX CPU), its calls compiled evicted kernels again and read slower
    and noisier. Said, not refused: where they fit, nothing differs."""
    if not current.device.startswith("cpu"):
        return []
    old, new = (r.environment.get(ONEDNN_CACHE_KEY, ONEDNN_DEFAULT_CACHE) for r in (baseline, current))
    if old == new:
        return []
    old, new = ("an unknown number of" if n is None else n for n in (old, new))
    return [
        f"note: the baseline's processes kept {old} oneDNN kernels, this run's {new}: where the interleaved cases "
        "need more than the smaller keeps (half precision on a CPU with AMX), those calls compiled evicted kernels "
        "again and read slower and noisier (measure/settings.py): retake the baseline to compare like with like"
    ]


def memory_notes(baseline: RunRecord, current: RunRecord) -> list[str]:
    """A baseline whose host memory is another figure than this run's: one from before the suite counted host
    allocations (or measured without memray) holds only RSS rises, which are shown, not gated. Said, so that a
    run judged without a host memory gate does not pass as one judged with it."""
    old, new = baseline.memory_metric(), current.memory_metric()
    if old == new:
        return []
    missing = "the baseline" if new == HOST_ALLOC_PEAK else "this run"
    return [
        f"note: host memory is not judged: {missing} counted no host allocations ({HOST_ALLOC_PEAK}, memray), and "
        "the RSS rise is not gated (it moves with the heap's layout); "
        + ("retake the baseline" if missing == "the baseline" else "install memray (pip install memray)")
    ]


def stack_changes(baseline: RunRecord, current: RunRecord) -> list[tuple[str, str | None, str | None]]:
    """(package, baseline's version, current's) for each of the stack's packages whose version differs."""
    old, new = (r.environment.get("packages") or {} for r in (baseline, current))
    return [(p, old.get(p), new.get(p)) for p in STACK_PACKAGES if old.get(p) != new.get(p)]


def stack_notes(baseline: RunRecord, current: RunRecord) -> list[str]:
    """A baseline measured with other library versions: the change may be the stack's or the machine's day, and
    only measuring both stacks in one session tells them apart (`compare-stacks --pinned baseline`)."""
    changed = [f"{p} {a or '-'} -> {b or '-'}" for p, a, b in stack_changes(baseline, current)]
    if not changed:
        return []
    return [
        f"note: the baseline was measured with another stack ({', '.join(changed)}); to judge the stack change "
        "itself at the paired threshold, both in one session: python -m perf_utils compare-stacks --pinned baseline "
        "--candidate current"
    ]


def merged(old: RunRecord | None, new: RunRecord) -> RunRecord:
    """The new run's results replace the old ones benchmark by benchmark; benchmarks not run are kept (with their
    sessions, when the old one was taken in several)."""
    if old is None:
        return new
    ran = new.by_id()
    kept: list[BenchmarkResult] = [r for r in old.results if r.id not in ran]
    out = new.copy()
    out.results = [*out.results, *kept]
    if any(r.sessions for r in kept):
        out.sessions = old.sessions
    return out


MAX_SESSIONS = 8  # a baseline keeps its newest sessions: the machine's drift is measured over days, not months


def with_session(old: RunRecord | None, new: RunRecord, path: Path) -> RunRecord:
    """`old` (the stored baseline at `path`) with `new` added as one more session, so the gate can measure how far
    the machine's level moves between sessions (`gate.sessions`) instead of assuming pyproject's `drift`. Each
    benchmark's rounds are joined (invocation labels kept unique, each round labelled with its session); a
    benchmark only one side ran keeps that side's result; beyond `MAX_SESSIONS` the oldest session is dropped.
    Sessions must measure the same work with the same stack: otherwise a BaselineError naming `path` and what
    differs (replace the baseline then)."""
    if old is None:
        return new
    problems = incompatibilities(old, new)
    problems += [f"{p} differs: baseline {a or '-'}, now {b or '-'}" for p, a, b in stack_changes(old, new)]
    # Every round of the old record labelled with its session (one unlabelled session is session 0).
    before = {i: replace(r, sessions=r.sessions or [0] * len(r.rounds)) if r.ran else r for i, r in old.by_id().items()}
    for r in new.results:
        prev = before.get(r.id)
        if r.ran and prev is not None and prev.ran and prev.counts and r.counts and prev.counts != r.counts:
            problems.append(f"{r.id}'s work differs: baseline produced {prev.counts}, now {r.counts}")
    if problems:
        raise BaselineError(
            path,
            "cannot take this run as one more session: " + "; ".join(problems) + " (a baseline's sessions measure "
            "the same work with the same stack; to replace it: --bark-save-baseline)",
        )
    stamps = [*(old.sessions or [old.created]), new.created]
    index = len(stamps) - 1
    results = []
    for r in new.results:
        prev = before.pop(r.id, None)
        if prev is not None and prev.ran and r.ran:
            results.append(_joined(prev, r, index))
        elif prev is not None and prev.ran:
            results.append(prev)  # not measurable today: the earlier sessions' result stays
        else:
            results.append(replace(r, sessions=[index] * len(r.rounds)) if r.ran else r)
    out = new.copy()
    out.results = [*results, *before.values()]
    out.sessions = stamps
    return _newest_sessions(out, MAX_SESSIONS)


def sessions_said(record: RunRecord) -> str:
    """ "5 sessions, <first> to <last>" (minutes), or "1 session, <when>": when a baseline was taken."""
    stamps = record.sessions or [record.created]
    if len(stamps) == 1:
        return f"1 session, {stamps[0][:16]}"
    return f"{len(stamps)} sessions, {stamps[0][:16]} to {stamps[-1][:16]}"


def _joined(prev: BenchmarkResult, now: BenchmarkResult, session: int) -> BenchmarkResult:
    """`prev`'s rounds, then `now`'s as `session`; counts, load time and fidelity stay `prev`'s."""
    labels = prev.invocations or [0] * len(prev.rounds)
    offset = max(labels, default=-1) + 1
    return replace(
        prev,
        rounds=[*prev.rounds, *now.rounds],
        invocations=[*labels, *(offset + i for i in (now.invocations or [0] * len(now.rounds)))],
        sessions=[*(prev.sessions or []), *[session] * len(now.rounds)],
        warmup=max((w for w in (prev.warmup, now.warmup) if w is not None), default=None),
    )


def _newest_sessions(record: RunRecord, most: int) -> RunRecord:
    """`record` with only its `most` newest sessions (labels renumbered from 0)."""
    stamps = record.sessions or []
    drop = len(stamps) - most
    if drop <= 0:
        return record
    record.sessions = stamps[drop:]
    kept_results = []
    for r in record.results:
        if not r.sessions:
            kept_results.append(r)  # did not run
            continue
        keep = [i for i, s in enumerate(r.sessions) if s >= drop]
        if not keep:  # measured only in dropped sessions, never since: kept as it was, one undated session
            kept_results.append(replace(r, sessions=None))
            continue
        newest = r.only(keep)
        kept_results.append(replace(newest, sessions=[s - drop for s in newest.sessions or []]))
    record.results = kept_results
    return record


def merge_shards(paths: list[Path]) -> RunRecord:
    """One run from the shards of a sharded run: same hardware, checkpoint and workload, no benchmark twice, except
    fp32, which every shard measures as its ratios' reference: the first shard's is kept. A shard that was
    interrupted makes the merged run say so, naming it; so does a shard missing from `paths` (its job died before
    keeping a run), where the shards say which they are (`Schedule.shard`): judged as interrupted, the benchmarks
    it held are not passed as "not selected"."""
    if not paths:
        raise ValueError("no shard files given")
    records = [load(p) for p in paths]
    missing = _missing_shards(paths, records)
    first = records[0]
    seen: dict[str, Path] = {}
    results: list[BenchmarkResult] = []
    for path, rec in zip(paths, records, strict=True):
        problems = incompatibilities(first, rec)
        if problems:
            raise BaselineError(path, "cannot be merged with " + str(paths[0]) + ": " + "; ".join(problems))
        for r in rec.results:
            if r.id in seen and r.config == REFERENCE_CONFIG:
                continue
            if r.id in seen:
                raise BaselineError(path, f"benchmark {r.id} is also in {seen[r.id]}: overlapping shards")
            seen[r.id] = path
            results.append(r)
    out = first.copy()
    out.results = results
    if out.schedule and out.schedule.shard:
        out.schedule = replace(out.schedule, shard=None)  # the merged run is the whole
    cut = [f"{path}: {rec.interrupted}" for path, rec in zip(paths, records, strict=True) if rec.interrupted]
    if missing:
        cut.append(missing)
    if cut:  # one interrupted or missing shard makes the merged run interrupted: judged so, never adopted
        out.mark_interrupted("; ".join(cut))
    return out


def _missing_shards(paths: list[Path], records: list[RunRecord]) -> str | None:
    """Which shards of the run are not among `records`, in words (None: all there, or runs of a version that did
    not record its shard). Shards of different splits, a shard given twice or a run that is no shard beside
    shards: a BaselineError naming the file."""
    parts = [(path, Shard.parse(rec.schedule.shard) if rec.schedule and rec.schedule.shard else None)
             for path, rec in zip(paths, records, strict=True)]  # fmt: skip
    known = [(path, part) for path, part in parts if part is not None]
    if not known:
        return None
    first_path, first = known[0]
    seen: dict[int, Path] = {}
    for path, part in parts:
        if part is None:
            raise BaselineError(path, f"is not a shard (its schedule names none), {first_path} is shard {first}")
        if part.n != first.n:
            raise BaselineError(path, f"is shard {part}, {first_path} is shard {first}: runs split differently")
        if part.k in seen:
            raise BaselineError(path, f"is shard {part}, as {seen[part.k]} is: the same shard given twice")
        seen[part.k] = path
    gone = [f"{k}/{first.n}" for k in range(1, first.n + 1) if k not in seen]
    if not gone:
        return None
    many = len(gone) > 1
    return (f"shard{'s' if many else ''} {', '.join(gone)} missing: no run of {'them' if many else 'it'} was given "
            "to merge (did its job fail before keeping one?)")  # fmt: skip


def write_atomic(path: Path, record: RunRecord) -> None:
    """Validate, then write atomically (`atomic.write_json`)."""
    data = record.to_dict()
    validate(data, path)
    atomic.write_json(path, data)


# --- kept runs ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KeptRun:
    path: Path
    record: RunRecord


KeptRuns = tuple[list[KeptRun], list[str]]  # kept runs, oldest first, and what could not be read (`kept_runs`)


def keep_run(results_dir: Path, record: RunRecord, again: Path | None = None) -> Path:
    """Add a run to the kept runs: `<time>-<hardware>-<checkpoint>[-shardKofN]/run.json`, written atomically. A
    run is named by its second: another kept in the same second gets `-2`, `-3`, ... rather than overwriting it;
    a shard's name says which, so the shards of one nightly, started in the same second on runners alike, keep
    their own names when a CI job gathers them into one folder. `again`: where this same run was kept before (it
    grew: `--bark-remeasure-noisy`), written over."""
    if again is not None:
        write_atomic(again, record)
        return again
    stamp = record.created.replace(":", "").replace("+0000", "Z")
    part = record.schedule.shard if record.schedule else None
    suffix = f"-shard{part.replace('/', 'of')}" if part else ""
    name = f"{stamp}-{record.hardware}-{Path(file_name(record.checkpoint['key'])).stem}{suffix}"
    path, n = results_dir / name / RUN_FILE, 1
    while path.exists():
        n += 1
        path = results_dir / f"{name}-{n}" / RUN_FILE
    write_atomic(path, record)
    return path


@dataclass(frozen=True)
class Pruned:
    """What `prune_runs` did: the runs left (oldest first), those removed, and a line saying so (None: none was)."""

    left: list[KeptRun]
    gone: list[KeptRun]
    said: str | None


def prune_runs(runs: list[KeptRun], keep: int, spare: Path | None = None) -> Pruned:
    """Remove the oldest of `runs` (kept runs of one kind, oldest first: `kept_runs(..., like=...)`) beyond the
    newest `keep` (a run's folder, or an earlier version's flat file). `spare` (the run just kept) is never removed
    and counts as one of the `keep`; runs of other hardware, checkpoints or workloads, and files that cannot be read,
    are not in `runs` and so never touched. Why: a nightly's history (kept in a CI cache) otherwise grows by a run
    and its figures every night, and trends read every one of them."""
    others = [r for r in runs if r.path != spare]
    room = keep - (len(others) < len(runs))  # the spared run is one of the `keep`
    doomed = others[: max(len(others) - room, 0)]
    for run in doomed:
        if run.path.name == RUN_FILE:
            shutil.rmtree(run.path.parent)
        else:
            run.path.unlink()
    left = [r for r in runs if r not in doomed]
    return Pruned(left, doomed, _pruned_said(doomed, keep) if doomed else None)


def _pruned_said(gone: list[KeptRun], keep: int) -> str:
    names = [r.path.parent.name if r.path.name == RUN_FILE else r.path.stem for r in gone]
    span = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"
    runs = f"{len(gone)} oldest kept run{'s' if len(gone) > 1 else ''}"
    return f"removed the {runs} beyond {keep} (--bark-keep-runs): {span}"


def kept_runs(results_dir: Path, like: RunRecord | None = None) -> KeptRuns:
    """Runs kept under `results_dir` (`<run>/run.json`, and the flat `<run>.json` of earlier versions), oldest
    first; with `like`, only those comparable to it (same hardware, checkpoint and workload). Files that cannot be
    read are named in the second list and skipped: one bad file must not hide the whole history."""
    if not results_dir.is_dir():
        return [], []
    runs, skipped = [], []
    for path in sorted({*results_dir.glob(f"*/{RUN_FILE}"), *results_dir.glob("*.json")}):
        try:
            record = load(path)
        except BaselineError as exc:
            skipped.append(str(exc))
            continue
        if like is None or not incompatibilities(record, like):
            runs.append(KeptRun(path, record))
    runs.sort(key=lambda r: (r.record.created, r.path.stat().st_mtime))  # runs of one second: as written
    return runs, skipped
