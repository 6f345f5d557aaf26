"""Fidelity gate: every CPU configuration computes what fp32 eager computes (within its tolerance), and faults
that leave the speed untouched are caught and name the sub-model."""

from dataclasses import replace

import pytest
import torch
from packaging.version import Version

from perf_utils.bark import configs, loading
from perf_utils.bark.environment import current_stack
from perf_utils.bark.workload import Workload
from perf_utils.gate.compare import REGRESSED, UNCHANGED, compare_result
from perf_utils.gate.thresholds import Thresholds
from perf_utils.measure import faults, fidelity
from perf_utils.measure.measurer import Measurer
from perf_utils.measure.run import REFERENCE
from perf_utils.record.fidelity import TOLERANCES, Fidelity, SubmodelFigures
from perf_utils.record.record import BenchmarkResult

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
    assert {"fp32", "fp16", "bf16", "torch_compile"} <= set(CPU_CONFIGS)


@pytest.mark.parametrize("name", CPU_CONFIGS)
def test_every_cpu_configuration_passes(tiny_checkpoint, reference, name):
    config = configs.get(name)
    figures = figures_of(tiny_checkpoint, config, reference)
    report = Fidelity.judged(figures, config.precision)
    assert report.passed, report.problems
    for sub in ("semantic", "coarse", "fine"):
        assert figures[sub].top1 >= TOLERANCES[config.precision].top1
        assert figures[sub].batch_rel_err <= TOLERANCES[config.precision].rel_err  # batched == alone
    if config.precision == "exact":
        assert all(figures[s].rel_err <= 1e-5 for s in ("semantic", "coarse", "fine"))
    else:  # half precision really is different, but within what half allows
        assert figures["semantic"].rel_err > 0
        assert figures["codec"].snr_db >= TOLERANCES[config.precision].snr_db


@pytest.mark.parametrize(
    ("fault", "named", "clean"),
    [
        ("drop_causal_mask", ("semantic", "coarse"), ("fine", "codec")),
        ("perturb_weights", ("fine",), ("semantic", "coarse", "codec")),
    ],
)
def test_injected_fault_fails_and_names_the_submodel(tiny_checkpoint, reference, fault, named, clean):
    config = faults.inject(configs.get("fp32"), fault)
    report = Fidelity.judged(figures_of(tiny_checkpoint, config, reference), config.precision)
    assert report.passed is False and report.status == "FAIL"
    text = " ".join(report.problems)
    for sub in named:
        assert sub in text
    for sub in clean:
        assert not any(p.startswith(sub) for p in report.problems)


def _ignore_padding_mask(model):
    """The semantic and coarse models drop any attention mask, as optimum's BetterTransformer for Bark does
    (`attn_mask=None`): no fault for Bark, whose generate never masks a position in its GPTs."""
    for sub in (model.semantic, model.coarse_acoustics):
        inner = sub.forward

        def forward(*args, _inner=inner, **kwargs):
            kwargs["attention_mask"] = None
            return _inner(*args, **kwargs)

        sub.forward = forward


def _audio(checkpoint, config):
    from transformers import set_seed

    from perf_utils.bark.workload import make_inputs

    loaded = loading.load(checkpoint, config, CPU)
    try:
        workload = Workload(n_tokens=16, batch_size=4)  # prompts of different lengths: padded and masked
        inputs = make_inputs(loaded.processor, workload, CPU)
        set_seed(workload.seed)
        with torch.no_grad():
            return loaded.model.generate(**inputs, **workload.generate_kwargs())
    finally:
        loading.unload(loaded)


@pytest.mark.parametrize(
    ("patch", "changes_audio"),
    [(_ignore_padding_mask, False), (faults.FAULTS["drop_causal_mask"], True)],
    ids=["padding mask ignored", "causal mask lost"],
)
def test_fidelity_fails_exactly_when_generate_computes_other_audio(tiny_checkpoint, reference, patch, changes_audio):
    """The check judges what `generate` computes: a padding mask ignored (BetterTransformer) changes no audio and
    passes; a causal mask lost changes the audio and fails."""
    fp32 = configs.get("fp32")
    patched = replace(fp32, patch=patch, test_only=True)
    assert (not torch.equal(_audio(tiny_checkpoint, fp32), _audio(tiny_checkpoint, patched))) is changes_audio
    report = Fidelity.judged(figures_of(tiny_checkpoint, patched, reference), "exact")
    assert report.passed is not changes_audio, report.problems


def test_the_speed_gate_alone_cannot_see_a_fidelity_fault(tiny_checkpoint, reference):
    """The fault does exactly the same work; with identical timings only the fidelity check fails it."""
    faulty = faults.inject(configs.get("fp32"), "perturb_weights")
    counts = []
    for config in (configs.get("fp32"), faulty):
        loaded = loading.load(tiny_checkpoint, config, CPU)
        try:
            measurer = Measurer(loaded, Workload(n_tokens=16, batch_size=1))
            measurer.call()
            counts.append(measurer.last_counts)
        finally:
            loading.unload(loaded)
    assert counts[0] == counts[1]
    rounds = [{"latency_s": 1.0 + i / 100, "host_peak_mb": 20.0} for i in range(5)]
    good = Fidelity.judged(figures_of(tiny_checkpoint, configs.get("fp32"), reference), "exact")
    bad = Fidelity.judged(figures_of(tiny_checkpoint, faulty, reference), "exact")
    base = BenchmarkResult("fp32", 1, "ok", rounds=rounds, fidelity=good)
    speed_only = BenchmarkResult("fp32", 1, "ok", rounds=rounds)
    with_fidelity = BenchmarkResult("fp32", 1, "ok", rounds=rounds, fidelity=bad)
    assert compare_result(base, speed_only, Thresholds()).verdict == UNCHANGED
    verdict = compare_result(base, with_fidelity, Thresholds())
    assert verdict.verdict == REGRESSED and verdict.fidelity == "FAIL"
    assert "fidelity: fine logits relative error" in verdict.reason


def _fid(**submodels: SubmodelFigures) -> Fidelity:
    return Fidelity("exact", True, submodels=submodels)


def test_markedly_worse_than_the_baseline_figure():
    base = _fid(semantic=SubmodelFigures(rel_err=6e-4), codec=SubmodelFigures(snr_db=46.0))
    assert _fid(semantic=SubmodelFigures(rel_err=7e-4)).worse_than(base) == []
    assert _fid(semantic=SubmodelFigures(rel_err=8e-3)).worse_than(base) == [
        "semantic logits error 8.00e-03, was 6.00e-04"
    ]
    assert _fid(codec=SubmodelFigures(snr_db=20.0)).worse_than(base) == ["codec audio SNR 20.0 dB, was 46.0 dB"]
    exact = _fid(semantic=SubmodelFigures(rel_err=0.0))
    assert _fid(semantic=SubmodelFigures(rel_err=1e-7)).worse_than(exact) == []  # floor


def test_the_typed_result_keeps_the_stored_json_shape():
    """Baselines written before the result was typed read back to the same figures, and write the same JSON."""
    stored = {
        "precision": "float16",
        "passed": True,
        "problems": [],
        "submodels": {"semantic": {"rel_err": 7e-4, "top1": 0.99, "batch_rel_err": 0.0}, "codec": {"snr_db": 46.6}},
    }
    fid = Fidelity.from_dict(stored)
    assert fid.submodels["semantic"].top1 == 0.99 and fid.submodels["codec"].rel_err is None
    assert fid.to_dict() == stored and fid.worst_rel_err == 7e-4
    not_checked = {"precision": "exact", "passed": None, "problems": [], "error": "RuntimeError: x"}
    assert Fidelity.from_dict(not_checked).to_dict() == not_checked


def test_tolerances_cover_every_precision():
    for config in configs.select():
        assert config.precision in TOLERANCES


def test_a_check_that_cannot_run_is_neither_pass_nor_fail():
    report = Fidelity.not_checked("exact", RuntimeError("tensors on two devices"))
    assert report.passed is None and report.status == "not checked"
    assert report.error is not None and "RuntimeError: tensors on two devices" in report.error
    rounds = [{"latency_s": 1.0 + i / 100} for i in range(5)]
    base = BenchmarkResult("cpu_offload", 1, "ok", rounds=rounds)
    verdict = compare_result(
        base, BenchmarkResult("cpu_offload", 1, "ok", rounds=rounds, fidelity=report), Thresholds()
    )
    assert verdict.verdict == UNCHANGED and verdict.fidelity == "not checked"


def test_the_offload_defect_is_found_without_an_accelerator(monkeypatch):
    """accelerate>=1.10 skips moving a module whose first parameter is already on the device (the H200's
    index_select error); the probe sees it on the meta device, and not with the older behaviour."""
    import accelerate
    from accelerate.hooks import CpuOffload
    from accelerate.utils import send_to_device

    from perf_utils.bark import compat

    if Version(accelerate.__version__) < Version("1.10"):
        assert compat.offload_defect() is None
    else:
        assert f"accelerate {accelerate.__version__} (>=1.10)" in compat.offload_defect()

    def moves_always(self, module, *args, **kwargs):  # accelerate<1.10
        module.to(self.execution_device)
        return send_to_device(args, self.execution_device), send_to_device(kwargs, self.execution_device)

    monkeypatch.setattr(CpuOffload, "pre_forward", moves_always)
    assert compat.offload_defect() is None


def test_fp32_on_nvidia_is_held_to_tf32s_tolerance(monkeypatch):
    import torch

    from perf_utils.measure.fidelity import judged_precision

    monkeypatch.setattr(fidelity, "_tf32_on", lambda: True)  # PyTorch's default for cuDNN
    assert judged_precision("exact", torch.device("cuda", 0)) == "tf32"
    assert judged_precision("exact", torch.device("cpu")) == "exact"
    assert judged_precision("float16", torch.device("cuda", 0)) == "float16"
    monkeypatch.setattr(fidelity, "_tf32_on", lambda: False)
    assert judged_precision("exact", torch.device("cuda", 0)) == "exact"
    tf32 = Fidelity.judged({"codec": SubmodelFigures(snr_db=60.0, batch_rel_err=1e-3)}, "tf32")
    assert tf32.passed and tf32.precision == "tf32"
    assert not Fidelity.judged({"codec": SubmodelFigures(snr_db=60.0, batch_rel_err=1e-3)}, "exact").passed


def test_under_offload_the_codec_is_decoded_as_generate_decodes_it(tiny_checkpoint, reference):
    """Bark never calls the codec's forward, so its offload hook never fires: generate offloads the fine model and
    moves the codec itself, then offloads it. Fidelity must do the same (on an H200 it found the codec on the CPU),
    and a stage that fails names its sub-model."""
    loaded = loading.load(tiny_checkpoint, REFERENCE, CPU)
    calls: list[str] = []

    class Hook:  # accelerate's UserCpuOffloadHook, as enable_cpu_offload leaves it on the model
        def __init__(self, name: str) -> None:
            self.name = name

        def offload(self) -> None:
            calls.append(self.name)

    model = loaded.model
    model.fine_acoustics_hook, model.codec_model_hook = Hook("fine offloaded"), Hook("codec offloaded")
    decode = model.codec_decode
    model.codec_decode = lambda codes: calls.append("decode") or decode(codes)
    try:
        out = fidelity.outputs(model)
        assert calls == ["fine offloaded", "decode", "codec offloaded"] * 2
        assert torch.equal(out["codec"], reference["codec"])

        def broken(codes):
            raise RuntimeError("index is on cuda:0, different from other tensors on cpu")

        model.codec_decode = broken
        report = fidelity.check(model, reference, "exact")
        assert report.status == "not checked" and report.error.startswith("StageError: codec: RuntimeError: index")
        assert calls[-1] == "codec offloaded"  # offloaded even when the decode failed
    finally:
        loading.unload(loaded)
