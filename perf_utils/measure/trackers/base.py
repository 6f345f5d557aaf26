"""What every tracker is: a context manager around one call that reports named numbers.

Each tracker also accounts for the time its own bookkeeping takes, so the suite can show that measuring
does not distort what is measured (the instrumentation budget is 2% of a call).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager


class Tracker:
    name = "tracker"

    def __init__(self) -> None:
        self.overhead_s = 0.0

    @contextmanager
    def _own_time(self) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.overhead_s += time.perf_counter() - start

    def start(self) -> None:  # pragma: no cover - interface
        pass

    def stop(self) -> None:  # pragma: no cover - interface
        pass

    def results(self) -> dict[str, float]:
        return {}

    def __enter__(self) -> Tracker:
        with self._own_time():
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._own_time():
            self.stop()
