"""Fidelity gate: every CPU configuration computes what fp32 eager computes (within its tolerance), and faults
that leave the speed untouched are caught and name the sub-model."""

import pytest
import torch

from perf_utils import configs, faults, fidelity, loading
from perf_utils.compare import REGRESSED, UNCHANGED, compare_result
from perf_utils.measure import Measurer
from perf_utils.record import ConfigResult
from perf_utils.session import REFERENCE
from perf_utils.stack import current_stack
from perf_utils.thresholds import Thresholds
from perf_utils.workload import Workload

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("torch_single_thread")


@pytest.fixture(scope="module")
def reference(tiny_checkpoint):
    loaded = loading.load(tiny_checkpoint, REFERENCE, CPU)
    try:
        yield fidelity.outputs(loaded.model)
    finally:
        loading.unload(loaded)


def figures_of(checkpoint, config, reference):
    loaded = loading.load(checkpoint, config, CPU)
    try:
        return fidelity.compare_outputs(fidelity.outputs(loaded.model), reference)
    finally:
        loading.unload(loaded)


CPU_CONFIGS = [c.name for c in configs.select() if configs.unavailable_reason(c, current_stack(), "cpu") is None]


def test_the_cpu_tier_is_what_we_think():
    assert {"baseline", "fp16", "bf16", "torch_compile"} <= set(CPU_CONFIGS)


@pytest.mark.parametrize("name", CPU_CONFIGS)
def test_every_cpu_configuration_passes(tiny_checkpoint, reference, name):
    config = configs.get(name)
    figures = figures_of(tiny_checkpoint, config, reference)
    report = fidelity.report(figures, config.precision)
    assert report["passed"], report["problems"]
    for sub in ("semantic", "coarse", "fine"):
        assert figures[sub].top1 >= fidelity.TOLERANCES[config.precision].top1
        assert figures[sub].batch_rel_err <= fidelity.TOLERANCES[config.precision].rel_err  # batched == alone
    if config.precision == "exact":
        assert all(figures[s].rel_err <= 1e-5 for s in ("semantic", "coarse", "fine"))
    else:  # half precision really is different, but within what half allows
        assert figures["semantic"].rel_err > 0
        assert figures["codec"].snr_db >= fidelity.TOLERANCES[config.precision].snr_db


@pytest.mark.parametrize(
    ("fault", "named", "clean"),
    [
        ("drop_attention_mask", ("semantic", "coarse"), ("fine", "codec")),
        ("perturb_weights", ("fine",), ("semantic", "coarse", "codec")),
    ],
)
def test_injected_fault_fails_and_names_the_submodel(tiny_checkpoint, reference, fault, named, clean):
    config = faults.inject(configs.get("baseline"), fault)
    report = fidelity.report(figures_of(tiny_checkpoint, config, reference), config.precision)
    assert not report["passed"]
    text = " ".join(report["problems"])
    for sub in named:
        assert sub in text
    for sub in clean:
        assert not any(p.startswith(sub) for p in report["problems"])


def test_the_speed_gate_alone_cannot_see_a_fidelity_fault(tiny_checkpoint, reference):
    """The fault does exactly the same work; with identical timings only the fidelity check fails it."""
    faulty = faults.inject(configs.get("baseline"), "perturb_weights")
    counts = []
    for config in (configs.get("baseline"), faulty):
        loaded = loading.load(tiny_checkpoint, config, CPU)
        try:
            measurer = Measurer(loaded, Workload(n_tokens=16, batch_size=1))
            measurer.call()
            counts.append(measurer.last_counts)
        finally:
            loading.unload(loaded)
    assert counts[0] == counts[1]
    rounds = [{"latency_s": 1.0 + i / 100, "host_peak_mb": 20.0} for i in range(5)]
    good = fidelity.report(figures_of(tiny_checkpoint, configs.get("baseline"), reference), "exact")
    bad = fidelity.report(figures_of(tiny_checkpoint, faulty, reference), "exact")
    base = ConfigResult("baseline", 1, "ok", rounds=rounds, fidelity=good)
    speed_only = ConfigResult("baseline", 1, "ok", rounds=rounds)
    with_fidelity = ConfigResult("baseline", 1, "ok", rounds=rounds, fidelity=bad)
    assert compare_result(base, speed_only, Thresholds()).verdict == UNCHANGED
    verdict = compare_result(base, with_fidelity, Thresholds())
    assert verdict.verdict == REGRESSED and verdict.fidelity == "FAIL"
    assert "fidelity: fine logits relative error" in verdict.reason


def test_markedly_worse_than_the_baseline_figure():
    base = {"submodels": {"semantic": {"rel_err": 6e-4}, "codec": {"snr_db": 46.0}}}
    assert fidelity.worse_than_baseline({"submodels": {"semantic": {"rel_err": 7e-4}}}, base) == []
    assert fidelity.worse_than_baseline({"submodels": {"semantic": {"rel_err": 8e-3}}}, base) == [
        "semantic logits error 8.00e-03, was 6.00e-04"
    ]
    assert fidelity.worse_than_baseline({"submodels": {"codec": {"snr_db": 20.0}}}, base) == [
        "codec audio SNR 20.0 dB, was 46.0 dB"
    ]
    exact = {"submodels": {"semantic": {"rel_err": 0.0}}}
    assert fidelity.worse_than_baseline({"submodels": {"semantic": {"rel_err": 1e-7}}}, exact) == []  # floor


def test_tolerances_cover_every_precision():
    for config in configs.select():
        assert config.precision in fidelity.TOLERANCES


def test_a_check_that_cannot_run_is_neither_pass_nor_fail():
    report = fidelity.not_checked("exact", RuntimeError("tensors on two devices"))
    assert report["passed"] is None and "RuntimeError: tensors on two devices" in report["error"]
    rounds = [{"latency_s": 1.0 + i / 100} for i in range(5)]
    base = ConfigResult("cpu_offload", 1, "ok", rounds=rounds)
    verdict = compare_result(base, ConfigResult("cpu_offload", 1, "ok", rounds=rounds, fidelity=report), Thresholds())
    assert verdict.verdict == UNCHANGED and verdict.fidelity == "not checked"


def test_embeds_keyword_follows_the_transformers_version():
    from perf_utils import compat

    class Bark4:  # transformers 4.x: BarkCausalModel.forward(..., input_embeds=None, ...)
        def forward(self, input_ids=None, input_embeds=None, attention_mask=None): ...

    class Bark5:
        def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None): ...

    patched = Bark5()
    patched.forward = lambda *a, **k: None  # a fault's wrapper must not hide the real signature
    assert compat.embeds_kwarg(Bark4()) == "input_embeds"
    assert compat.embeds_kwarg(Bark5()) == "inputs_embeds"
    assert compat.embeds_kwarg(patched) == "inputs_embeds"
