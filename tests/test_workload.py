"""The fixed work: every dtype and batch size produces exactly the tokens and samples Bark's arithmetic
predicts, and anything else is refused before its timing could be compared."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from perf_utils.bark import configs, loading
from perf_utils.bark.checkpoints import Checkpoint
from perf_utils.bark.loading import LoadedBark
from perf_utils.bark.workload import (
    PROMPTS,
    SAMPLING,
    Counts,
    Workload,
    WorkloadError,
    check_counts,
    default_tokens,
    expected_counts,
    make_inputs,
    prompts_hash,
)
from perf_utils.measure.measurer import Measurer
from perf_utils.measure.run import warm_up

CPU = torch.device("cpu")
N = 32

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _counts(loaded: LoadedBark, batch_size: int) -> tuple[Counts, Counts]:
    """One measured call; (what it did, what it should have done)."""
    measurer = Measurer(loaded, Workload(n_tokens=N, batch_size=batch_size))
    measurer.call()
    assert measurer.last_counts is not None
    return measurer.last_counts, expected_counts(loaded.model, measurer.workload)


@pytest.fixture(scope="module")
def counts_by_run(
    torch_single_thread: None, tiny_checkpoint: Checkpoint, loaded_fp32: LoadedBark
) -> dict[str, tuple[Counts, Counts]]:
    """fp32 at batch 1 and 2, fp16 and bf16 at batch 1: one call each, each half-precision model freed after."""
    runs = {"float32-bs1": _counts(loaded_fp32, 1), "float32-bs2": _counts(loaded_fp32, 2)}
    for name in ("fp16", "bf16"):
        loaded = loading.load(tiny_checkpoint, configs.get(name), CPU)
        try:
            assert next(loaded.model.semantic.parameters()).dtype == configs.get(name).torch_dtype
            runs[f"{configs.get(name).dtype}-bs1"] = _counts(loaded, 1)
        finally:
            loading.unload(loaded)
    return runs


def test_fixed_work_is_identical_across_dtypes(counts_by_run: dict[str, tuple[Counts, Counts]]) -> None:
    found = {k: v[0] for k, v in counts_by_run.items() if k.endswith("bs1")}
    assert set(found) == {"float32-bs1", "float16-bs1", "bfloat16-bs1"}
    assert found["float16-bs1"] == found["float32-bs1"]
    assert found["bfloat16-bs1"] == found["float32-bs1"]


def test_fixed_work_equals_expected_counts(counts_by_run: dict[str, tuple[Counts, Counts]]) -> None:
    for run, (found, expected) in counts_by_run.items():
        assert found == expected, run


def test_expected_counts_arithmetic(counts_by_run: dict[str, tuple[Counts, Counts]]) -> None:
    """32 semantic tokens at 49.9 Hz -> 48 coarse frames at 75 Hz (2 codebooks), 8 fine codebooks, hop 320."""
    found, _ = counts_by_run["float32-bs1"]
    assert found == Counts(semantic_tokens=32, coarse_tokens=96, fine_tokens=384, audio_samples=15_360, batch_size=1)


def test_batch_changes_only_the_batch(counts_by_run: dict[str, tuple[Counts, Counts]]) -> None:
    one, _ = counts_by_run["float32-bs1"]
    two, _ = counts_by_run["float32-bs2"]
    assert two.batch_size == 2
    assert dataclasses.replace(two, batch_size=1) == one  # same work per sample


def test_expected_counts_scale_with_tokens(loaded_fp32: LoadedBark) -> None:
    e64 = expected_counts(loaded_fp32.model, Workload(n_tokens=64, batch_size=1))
    assert e64.semantic_tokens == 64
    assert e64.audio_samples == 30_720  # BARK.md: N=64 -> 30720 samples
    assert expected_counts(loaded_fp32.model, Workload(n_tokens=64, batch_size=8)).batch_size == 8


def test_check_counts_raises_on_mismatch() -> None:
    expected = Counts(32, 96, 384, 15_360, 1)
    check_counts(expected, expected, "same")  # no error
    short = dataclasses.replace(expected, audio_samples=15_040)
    with pytest.raises(WorkloadError, match="configuration 'fp16': the call did not do the fixed work") as err:
        check_counts(short, expected, "configuration 'fp16'")
    assert "15040" in str(err.value) and "15360" in str(err.value)
    assert isinstance(err.value, AssertionError)  # a failed test in pytest, not an error in the harness
    with pytest.raises(WorkloadError):
        check_counts(dataclasses.replace(expected, batch_size=8), expected, "batch")


def test_measurer_refuses_a_call_that_did_not_do_the_fixed_work(loaded_fp32: LoadedBark) -> None:
    measurer = Measurer(loaded_fp32, Workload(n_tokens=N, batch_size=1))
    measurer.expected = dataclasses.replace(measurer.expected, semantic_tokens=N + 1)
    with pytest.raises(WorkloadError, match="configuration 'fp32'"):
        measurer.call()
    assert measurer.last_counts is None


def test_the_token_floor_the_options_check_is_the_workloads() -> None:
    """--bark-tokens is refused below `options.MIN_TOKENS` before anything loads; the workload refuses the same."""
    from perf_utils import options
    from perf_utils.bark import workload

    assert options.MIN_TOKENS == workload.MIN_TOKENS
    Workload(n_tokens=workload.MIN_TOKENS, batch_size=1)
    with pytest.raises(ValueError, match=f"n_tokens must be at least {workload.MIN_TOKENS}"):
        Workload(n_tokens=workload.MIN_TOKENS - 1, batch_size=1)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_workload_rejects_batch_size(batch_size: int) -> None:
    with pytest.raises(ValueError, match=f"batch size must be at least 1; got {batch_size}"):
        Workload(n_tokens=N, batch_size=batch_size)


def test_past_eight_the_prompts_repeat_in_order_and_the_order_is_recorded() -> None:
    assert Workload(n_tokens=8, batch_size=16).prompts() == list(PROMPTS) * 2
    assert Workload(n_tokens=8, batch_size=11).prompts() == [*PROMPTS, *PROMPTS[:3]]
    assert Workload(n_tokens=8, batch_size=16).identity()["prompt_order"] == "cyclic"


@pytest.mark.parametrize("value", ["0", "65", "1,x"])
def test_the_batch_size_option_takes_1_to_64(value: str) -> None:
    import argparse

    from perf_utils.options import batch_sizes

    assert batch_sizes("1,8,16,32,64") == [1, 8, 16, 32, 64]
    with pytest.raises(argparse.ArgumentTypeError, match="integers from 1 to 64"):
        batch_sizes(value)


def test_a_batch_of_sixteen_does_sixteen_samples_of_the_fixed_work(loaded_fp32: LoadedBark) -> None:
    measurer = Measurer(loaded_fp32, Workload(n_tokens=8, batch_size=16))
    row = measurer.call()
    assert measurer.last_counts is not None and measurer.last_counts.batch_size == 16
    assert row["throughput_sps"] == pytest.approx(16 / row["latency_s"])


@pytest.mark.parametrize("n_tokens", [0, 1, 7])
def test_workload_rejects_too_few_tokens(n_tokens: int) -> None:
    with pytest.raises(ValueError, match=f"n_tokens must be at least 8.*got {n_tokens}"):
        Workload(n_tokens=n_tokens, batch_size=1)


def test_workload_limits_accepted() -> None:
    assert Workload(n_tokens=8, batch_size=1).prompts() == [PROMPTS[0]]
    assert Workload(n_tokens=8, batch_size=8).prompts() == list(PROMPTS)


def test_prompts_are_eight_and_distinct() -> None:
    assert len(PROMPTS) == 8
    assert len(set(PROMPTS)) == 8
    assert all(p.strip() == p and p for p in PROMPTS)


def test_make_inputs_pads_to_256_with_attention_mask(loaded_fp32: LoadedBark) -> None:
    for batch_size in (1, 8):
        inputs = make_inputs(loaded_fp32.processor, Workload(n_tokens=N, batch_size=batch_size), CPU)
        assert set(inputs) >= {"input_ids", "attention_mask"}
        assert inputs["input_ids"].shape == (batch_size, 256)
        assert inputs["attention_mask"].shape == (batch_size, 256)
        mask = inputs["attention_mask"]
        assert set(mask.unique().tolist()) == {0, 1}  # real tokens, then padding
        real = mask.sum(dim=1)
        assert bool((real > 2).all()) and bool((real < 256).all())
        pad_id = loaded_fp32.processor.tokenizer.pad_token_id
        assert bool((inputs["input_ids"][mask == 0] == pad_id).all())
        assert all(t.device == CPU for t in inputs.values())
    rows = make_inputs(loaded_fp32.processor, Workload(n_tokens=N, batch_size=8), CPU)["input_ids"]
    assert len({tuple(r.tolist()) for r in rows}) == 8  # distinct prompts tokenize to distinct inputs


def test_generate_kwargs_pin_the_length_and_the_sampling() -> None:
    kwargs = Workload(n_tokens=48, batch_size=1).generate_kwargs()
    assert kwargs["semantic_min_new_tokens"] == kwargs["semantic_max_new_tokens"] == 48
    assert kwargs["do_sample"] is True
    assert kwargs["coarse_temperature"] == 0.8
    assert kwargs["fine_temperature"] == 0.4


def test_workloads_do_not_share_sampling_dicts() -> None:
    a, b = Workload(n_tokens=N, batch_size=1), Workload(n_tokens=N, batch_size=1)
    a.sampling["do_sample"] = False
    assert b.sampling["do_sample"] is True
    assert SAMPLING["do_sample"] is True


def test_identity_and_defaults() -> None:
    identity = Workload(n_tokens=N, batch_size=8).identity()
    assert identity == Workload(n_tokens=N, batch_size=1).identity()  # batch size is in the benchmark id instead
    assert identity["prompts_sha256"] == prompts_hash() != prompts_hash(PROMPTS[:7])
    assert identity["n_tokens"] == N
    assert default_tokens("cpu") == 32
    assert default_tokens("cuda") == default_tokens("mps") == 256


# --- warm-up to a steady state ----------------------------------------------------------------------------------


def _calls(latencies: list[float]) -> tuple[list[float], object]:
    made: list[float] = []

    def call() -> float:
        made.append(latencies[len(made)])
        return made[-1]

    return made, call


def test_warm_up_goes_on_while_the_calls_keep_getting_faster() -> None:
    made, call = _calls([2.0, 1.2, 1.0, 0.99, 1.01, 1.0])
    assert warm_up(call, least=1) == 4  # 0.99 is within 2% of the best before it: steady
    assert made == [2.0, 1.2, 1.0, 0.99]


def test_warm_up_takes_at_least_two_and_at_least_what_was_asked() -> None:
    assert warm_up(_calls([1.0] * 10)[1], least=1) == 2
    assert warm_up(_calls([1.0] * 10)[1], least=5) == 5
    made, call = _calls([9.0, 1.0])
    assert warm_up(call, least=0) == 0 and made == []  # asked for none: a cold measurement


def test_warm_up_stops_at_its_cap_on_an_endless_trend() -> None:
    made, call = _calls([0.95**i for i in range(20)])
    assert warm_up(call, least=1, most=7) == 7 and len(made) == 7
