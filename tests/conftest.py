"""Session fixtures shared by the tests: one tiny checkpoint, one loaded fp32 model, and the two real runs of the
suite (a healthy baseline, then a regressed run against it) whose wiring several test modules check.

Building the tiny checkpoint costs seconds and loading it about half a second, so both are built once per
session. The checkpoint cache (`BARK_PERF_CACHE`) points into the session's tmp dir so a test run never
reads or writes the user's real cache; the variable is restored when the session ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import torch

from perf_utils.bark import checkpoints, configs, loading
from perf_utils.bark.checkpoints import Checkpoint
from perf_utils.bark.loading import LoadedBark

CPU = torch.device("cpu")


@contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread, restored afterwards.

    On a 2-core machine shared with another torch process, torch's default of one OpenMP thread per core
    oversubscribes the cores and a tiny-model call collapses from ~0.5 s to ~11 s (seen here); with one
    thread it stays ~0.5 s. These tests check how things are measured, not how fast Bark is, so everything
    that runs the model here runs single-threaded.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def torch_single_thread() -> Iterator[None]:
    """`single_thread` for a whole test module (not the session: benchmark tests in the same session keep the
    thread count they measure with)."""
    with single_thread():
        yield


@pytest.fixture(scope="session")
def bark_perf_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`BARK_PERF_CACHE` pointed at a session tmp dir for the whole session (monkeypatch is function scoped)."""
    path = tmp_path_factory.mktemp("bark-perf-cache")
    previous = os.environ.get(checkpoints.ENV_CACHE)
    os.environ[checkpoints.ENV_CACHE] = str(path)
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop(checkpoints.ENV_CACHE, None)
        else:
            os.environ[checkpoints.ENV_CACHE] = previous


@pytest.fixture(scope="session")
def tiny_checkpoint(bark_perf_cache: Path) -> Checkpoint:
    """The offline tiny Bark, built once into the session cache."""
    with single_thread():
        return checkpoints.resolve(checkpoints.TINY)


@pytest.fixture(scope="session")
def loaded_fp32(tiny_checkpoint: Checkpoint) -> Iterator[LoadedBark]:
    """The tiny checkpoint loaded with the `fp32` configuration (fp32, eager) on the CPU."""
    loading.quiet_transformers()
    with single_thread():
        loaded = loading.load(tiny_checkpoint, configs.get("fp32"), CPU)
    yield loaded
    loading.unload(loaded)


@pytest.fixture(scope="session")
def healthy(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real `pytest benchmarks` run that adopted its baseline (see suite.healthy_run)."""
    import suite

    return suite.healthy_run(tmp_path_factory.mktemp("healthy"))


@pytest.fixture(scope="session")
def regressed(healthy: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A real run with `fp32` about 4x slower (in its coarse stage) and a new `bf16`, gated against `healthy`
    (suite.regressed_run)."""
    import suite

    return suite.regressed_run(healthy, tmp_path_factory.mktemp("regressed"))
