"""Time of each of Bark's four stages inside one `generate`, and what each produced.

`BarkModel.generate` calls `self.semantic.generate`, `self.coarse_acoustics.generate`,
`self.fine_acoustics.generate` and `self.codec_decode`; wrapping those four bound methods on the instance
(restored afterwards) times each stage without touching transformers' code and works under offload hooks
and `Module.compile()` alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from perf_utils.bark import device as dev
from perf_utils.bark.workload import Counts
from perf_utils.measure.trackers.base import Tracker
from perf_utils.record.metrics import STAGES, stage_metric

_ABSENT = object()

# stage name (record.metrics.STAGES) -> (attribute path of the owner on BarkModel, method name)
STAGE_METHODS: dict[str, tuple[str, str]] = dict(
    zip(
        STAGES,
        (
            ("semantic", "generate"),
            ("coarse_acoustics", "generate"),
            ("fine_acoustics", "generate"),
            ("", "codec_decode"),
        ),
        strict=True,
    )
)


def _shape(output: Any) -> tuple[int, ...]:
    if isinstance(output, tuple):  # coarse with return_output_lengths
        output = output[0]
    if isinstance(output, list):  # codec with output lengths: one tensor per sample
        return (len(output), *output[0].shape)
    return tuple(output.shape)


class StageTracker(Tracker):
    name = "stages"

    def __init__(self, model: Any, device: torch.device) -> None:
        super().__init__()
        self.model, self.device = model, device
        self.times: dict[str, float] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._patched: list[tuple[Any, str, Any]] = []  # (owner, method, instance attribute it shadowed)

    def _wrap(self, stage: str, inner: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            dev.synchronize(self.device)
            t1 = time.perf_counter()
            out = inner(*args, **kwargs)
            dev.synchronize(self.device)
            t3 = time.perf_counter()
            self.times[stage] = self.times.get(stage, 0.0) + (t3 - t1)
            self.shapes[stage] = _shape(out)
            self.overhead_s += (t1 - t0) + (time.perf_counter() - t3)
            return out

        return timed

    def start(self) -> None:
        self.times.clear()
        self.shapes.clear()
        for stage, (owner_path, method) in STAGE_METHODS.items():
            owner = self.model.get_submodule(owner_path) if owner_path else self.model
            self._patched.append((owner, method, vars(owner).get(method, _ABSENT)))
            setattr(owner, method, self._wrap(stage, getattr(owner, method)))

    def stop(self) -> None:
        """Put back exactly what was there: the class's method, or an instance patch someone else made."""
        for owner, method, previous in reversed(self._patched):
            if previous is _ABSENT:
                vars(owner).pop(method, None)
            else:
                setattr(owner, method, previous)
        self._patched.clear()

    def counts(self) -> Counts:
        sem, coarse, fine, audio = (self.shapes[s] for s in STAGE_METHODS)
        return Counts(
            semantic_tokens=sem[-1],
            coarse_tokens=coarse[-1],
            fine_tokens=fine[-1] * fine[-2],
            audio_samples=audio[-1],
            batch_size=sem[0],
        )

    def results(self) -> dict[str, float]:
        return {stage_metric(s): t for s, t in self.times.items()}
