"""One invocation in a fresh process: `python -m perf_utils.measure.worker SPEC OUT`.

Why a process: the medians of separate processes spread several times wider than the rounds of one (memory
layout, allocator and cache state, what the machine does in those seconds), and reloading the model inside one
process does not reproduce that spread (README, "Where the noise lives"). The parent (`measure.run.Run`) writes
the plan and the cases as JSON, the worker measures them through the same `Run.invocation` an in-process run
uses and writes back its results; progress lines are relayed as they come. A worker that dies makes every one of
its benchmarks `failed` with the end of its output, never a lost run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from perf_utils.measure.run import Case, Invocation, Run, RunPlan
from perf_utils.record.golden import Fingerprint
from perf_utils.record.record import FAILED, BenchmarkResult

PROGRESS = "@@bark-progress "  # a worker's progress line; any other output is kept for an error message
TAIL = 3000  # characters of a dead worker's output kept in its benchmarks' reason


def plan_spec(plan: RunPlan) -> dict[str, Any]:
    """Every field of the plan, the checkpoint and device as what resolves them again."""
    fields = {f.name: getattr(plan, f.name) for f in dataclasses.fields(plan)}
    return {**fields, "checkpoint": plan.checkpoint.spec, "device": str(plan.device)}


def case_spec(case: Case) -> dict[str, Any]:
    return {"config": case.config.name, "fault": case.config.fault, "batch_size": case.batch_size}


def read_plan(spec: dict[str, Any]) -> RunPlan:
    from perf_utils.bark import checkpoints
    from perf_utils.bark.device import resolve_device

    resolved = {"checkpoint": checkpoints.resolve(spec["checkpoint"]), "device": resolve_device(spec["device"])}
    return RunPlan(**{**spec, **resolved})


def read_case(spec: dict[str, Any]) -> Case:
    """The configuration by name from the registry, with its injected fault rebuilt (tests, gate-quality)."""
    from perf_utils.bark import configs
    from perf_utils.measure import faults

    config = configs.get(spec["config"])
    if spec.get("fault"):
        config = faults.inject(config, spec["fault"])
    return Case(config, spec["batch_size"])


def invoke(plan: RunPlan, selected: list[Case], index: int, check_fidelity: bool, progress: Any = None) -> Invocation:
    """Run invocation `index` of `selected` in a worker process and read back what it measured."""
    with tempfile.TemporaryDirectory(prefix="bark-invocation-") as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        spec = {"plan": plan_spec(plan), "cases": [case_spec(c) for c in selected], "index": index,
                "fidelity": check_fidelity}  # fmt: skip
        spec_file.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "perf_utils.measure.worker", str(spec_file), str(out_file)]
        other: list[str] = []
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(PROGRESS):
                    if progress:
                        progress(line[len(PROGRESS) :].rstrip("\n"))
                else:
                    other.append(line)
            code = proc.wait()
        finally:
            if proc.poll() is None:  # interrupted: never leave a worker measuring behind us
                proc.kill()
                proc.wait()
        if code != 0 or not out_file.exists():
            tail = "".join(other)[-TAIL:]
            reason = f"worker process of invocation {index + 1} exited with status {code}: {tail.strip()}"
            results = [BenchmarkResult(c.config.name, c.batch_size, FAILED, reason, changes=c.config.changes())
                       for c in selected]  # fmt: skip
            return Invocation(results, interleaved=False, tracebacks={c.id: tail for c in selected})
        data = json.loads(out_file.read_text())
    return Invocation(
        [BenchmarkResult.from_dict(r) for r in data["results"]],
        interleaved=data["interleaved"],
        note=data["note"],
        tracebacks=data["tracebacks"],
        reference=Fingerprint.from_dict(data["reference"]) if data["reference"] else None,
    )


def main(argv: list[str]) -> int:
    spec_file, out_file = Path(argv[0]), Path(argv[1])
    spec = json.loads(spec_file.read_text())

    def progress(message: str) -> None:
        print(PROGRESS + message, flush=True)

    run = Run(read_plan(spec["plan"]), progress, check_fidelity=bool(spec["fidelity"]))
    done = run.invocation([read_case(c) for c in spec["cases"]], spec["index"])
    reference = done.reference.to_dict() if done.reference else None
    data = {"results": [r.to_dict() for r in done.results], "interleaved": done.interleaved, "note": done.note,
            "tracebacks": done.tracebacks, "reference": reference}  # fmt: skip
    partial = out_file.with_suffix(".partial")
    partial.write_text(json.dumps(data))
    os.replace(partial, out_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
