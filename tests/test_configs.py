"""The configuration matrix as data: every reason a configuration cannot run (on hand-built stacks, so no other
software needs installing), the registry's rules, and the version shims in `compat`."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch

from perf_utils.bark import compat, configs
from perf_utils.bark.configs import OptimizationConfig, unavailable_reason, unavailable_reasons
from perf_utils.bark.environment import Stack

MODERN = {
    "torch": "2.13.0",
    "transformers": "5.23.0",
    "optimum": "2.3.0",
    "accelerate": "1.15.0",
    "flash-attn": None,
    "nvidia-ml-py": "13.615.71",
    "triton": None,
}
LEGACY = {**MODERN, "transformers": "4.48.3", "optimum": "1.27.0"}


def make_stack(accelerator: str | None = None, cxx: str | None = "/usr/bin/c++", **packages: str | None) -> Stack:
    """A stack by hand: MODERN packages with `packages` overriding (use flash_attn= for flash-attn)."""
    pkgs = dict(MODERN)
    pkgs.update({k.replace("_", "-"): v for k, v in packages.items()})
    return Stack(
        python="3.11.9",
        packages=pkgs,
        accelerator=accelerator,
        accelerator_name="NVIDIA H100 80GB HBM3" if accelerator == "cuda" else None,
        accelerator_count=1 if accelerator else 0,
        cxx_compiler=cxx,
    )


def reason(name: str, stack: Stack, device_type: str = "cpu") -> str | None:
    return unavailable_reason(configs.get(name), stack, device_type)


# --- the names and the registry ------------------------------------------------------------------------------

SPEC_NAMES = (
    "fp32",
    "bettertransformer",
    "flash_attention_2",
    "fp16",
    "bf16",
    "cpu_offload",
    "offload+bettertransformer",
    "offload+bettertransformer+fp16",
    "bettertransformer+fp16",
    "fp16+flash_attention_2",
    "offload+fp16",
    "torch_compile",
)


def test_spec_names_exist() -> None:
    for name in SPEC_NAMES:
        assert configs.get(name).name == name


def test_builtin_names_are_unique() -> None:
    names = [c.name for c in configs._BUILTIN]
    assert len(names) == len(set(names))
    assert set(names) >= set(SPEC_NAMES)
    assert all(not c.test_only for c in configs._BUILTIN)


def test_get_unknown_lists_known_names() -> None:
    with pytest.raises(KeyError) as err:
        configs.get("warp_drive")
    message = err.value.args[0]
    assert "'warp_drive'" in message
    for name in SPEC_NAMES:
        assert name in message


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> dict[str, OptimizationConfig]:
    """A private copy of the registry: registrations in a test never leak into another."""
    copy = dict(configs.CONFIGS)
    monkeypatch.setattr(configs, "CONFIGS", copy)
    return copy


def test_register_refuses_duplicates(registry: dict[str, OptimizationConfig]) -> None:
    with pytest.raises(ValueError, match="'fp32' is already registered"):
        configs.register(OptimizationConfig("fp32", "an impostor"))
    assert configs.get("fp32").summary != "an impostor"
    replaced = configs.register(OptimizationConfig("fp32", "replaced on purpose"), replace=True)
    assert configs.get("fp32") is replaced


def test_register_test_only_is_hidden_from_default_selection(registry: dict[str, OptimizationConfig]) -> None:
    fault = configs.register(OptimizationConfig("slow_fault", "injected fault", test_only=True))
    assert configs.get("slow_fault") is fault
    assert fault not in configs.select()
    assert fault in configs.select(include_test_only=True)
    assert configs.select(["slow_fault"]) == [fault]
    with pytest.raises(KeyError) as err:
        configs.get("nope")
    assert "slow_fault" not in err.value.args[0]  # the known-names list is for users


def test_invalid_dtype_names_the_configuration() -> None:
    with pytest.raises(ValueError, match="'fp8_dream'") as err:
        OptimizationConfig("fp8_dream", "not a dtype we know", dtype="float8")
    assert "'float8'" in str(err.value)


def test_dtypes_and_precision() -> None:
    assert configs.get("fp32").torch_dtype is torch.float32
    assert configs.get("fp16").torch_dtype is torch.float16
    assert configs.get("bf16").torch_dtype is torch.bfloat16
    assert configs.get("flash_attention_2").torch_dtype is torch.bfloat16  # FA2 needs half precision
    assert configs.get("fp32").precision == "exact"
    assert configs.get("bettertransformer").precision == "exact"
    assert configs.get("offload+bettertransformer+fp16").precision == "float16"
    combo = configs.get("offload+bettertransformer+fp16").changes()
    assert combo == {
        "dtype": "float16",
        "attn_implementation": "eager",
        "bettertransformer": True,
        "cpu_offload": True,
        "compile": False,
    }


# --- availability reasons ------------------------------------------------------------------------------------


def test_fp32_always_available() -> None:
    assert reason("fp32", make_stack()) is None
    assert reason("fp32", make_stack(accelerator="cuda"), "cuda") is None


def test_bettertransformer_modern_stack_exact_text() -> None:
    stack = make_stack(optimum="2.3.0", transformers="5.23.0")
    assert reason("bettertransformer", stack) == (
        "bettertransformer needs optimum<2.0 and transformers<4.49; found optimum 2.3.0, transformers 5.23.0"
    )


def test_bettertransformer_available_on_legacy_stack() -> None:
    stack = make_stack(optimum="1.27.0", transformers="4.48.3")
    assert reason("bettertransformer", stack) is None
    assert reason("bettertransformer+fp16", stack) is None


@pytest.mark.parametrize(
    ("optimum", "transformers", "found"),
    [
        ("1.27.0", "4.49.0", "found optimum 1.27.0, transformers 4.49.0"),  # old optimum, too-new transformers
        ("2.0.0", "4.48.3", "found optimum 2.0.0, transformers 4.48.3"),  # BetterTransformer removed
        (None, "4.48.3", "found optimum not installed, transformers 4.48.3"),
    ],
)
def test_bettertransformer_each_bound(optimum: str | None, transformers: str, found: str) -> None:
    text = reason("bettertransformer", make_stack(optimum=optimum, transformers=transformers))
    assert text == f"bettertransformer needs optimum<2.0 and transformers<4.49; {found}"


def test_cpu_offload_without_accelerator_exact_text() -> None:
    assert reason("cpu_offload", make_stack(accelerator=None)) == "cpu_offload needs an accelerator; none found"


def test_cpu_offload_with_accelerator_but_cpu_device() -> None:
    assert reason("cpu_offload", make_stack(accelerator="cuda"), "cpu") == (
        "cpu_offload needs an accelerator; this run targets the cpu (--bark-device)"
    )


def test_cpu_offload_without_accelerate() -> None:
    stack = make_stack(accelerator="cuda", accelerate=None)
    assert reason("cpu_offload", stack, "cuda") == "cpu_offload needs the accelerate package; not installed"


def test_cpu_offload_is_unavailable_where_accelerate_leaves_the_semantic_model_on_the_cpu() -> None:
    """Seen on an H200: accelerate 1.15 crashed the blog's best combination under transformers 4.48 and ran the
    semantic model on the CPU under 5.17; every configuration with offload says so, none is measured."""
    from dataclasses import replace

    stack = replace(make_stack(accelerator="cuda"), offload_defect="accelerate 1.15.0 (>=1.10) does not move ...")
    for name in ("cpu_offload", "offload+fp16", "offload+bettertransformer+fp16"):
        assert reason(name, stack, "cuda").endswith(
            "cpu_offload is broken on this stack: accelerate 1.15.0 (>=1.10) does not move ..."
        )
    assert reason("fp16", stack, "cuda") is None


def test_cpu_offload_available_on_accelerator() -> None:
    assert reason("cpu_offload", make_stack(accelerator="cuda"), "cuda") is None
    assert reason("cpu_offload", make_stack(accelerator="xpu"), "xpu") is None
    assert reason("offload+fp16", make_stack(accelerator="cuda"), "cuda") is None


def test_flash_attention_2_on_cpu_without_flash_attn() -> None:
    text = reason("flash_attention_2", make_stack(flash_attn=None), "cpu")
    assert text == (
        "flash_attention_2 needs CUDA and the flash-attn package; "
        "found no CUDA device (running on cpu), flash-attn not installed"
    )


def test_flash_attention_2_without_flash_attn_on_cuda() -> None:
    text = reason("flash_attention_2", make_stack(accelerator="cuda", flash_attn=None), "cuda")
    assert text == "flash_attention_2 needs CUDA and the flash-attn package; found flash-attn not installed"


def test_flash_attention_2_needs_cuda_not_another_accelerator() -> None:
    text = reason("flash_attention_2", make_stack(accelerator="xpu", flash_attn="2.8.3"), "xpu")
    assert text == "flash_attention_2 needs CUDA and the flash-attn package; found no CUDA device (running on xpu)"


def test_flash_attention_2_available_with_cuda_and_flash_attn() -> None:
    stack = make_stack(accelerator="cuda", flash_attn="2.8.3")
    assert reason("flash_attention_2", stack, "cuda") is None
    assert reason("fp16+flash_attention_2", stack, "cuda") is None


def test_torch_compile_without_cxx_compiler() -> None:
    assert reason("torch_compile", make_stack(cxx=None), "cpu") == (
        "torch_compile needs a C++ compiler for inductor's CPU backend; none found (set CXX)"
    )
    assert reason("torch_compile", make_stack(cxx="/usr/bin/g++"), "cpu") is None


def test_torch_compile_on_cuda_needs_triton() -> None:
    stack = make_stack(accelerator="cuda", cxx=None, triton=None)
    assert reason("torch_compile", stack, "cuda") == "torch_compile needs triton on CUDA; not installed"
    assert reason("torch_compile", make_stack(accelerator="cuda", cxx=None, triton="3.5.0"), "cuda") is None


def test_fp16_on_cpu_with_old_torch() -> None:
    assert reason("fp16", make_stack(torch="2.0.1"), "cpu") == (
        "fp16 on cpu needs torch>=2.1 (half LayerNorm kernel); found torch 2.0.1"
    )
    assert reason("fp16", make_stack(torch="2.1.0"), "cpu") is None
    assert reason("fp16", make_stack(accelerator="cuda", torch="2.0.1"), "cuda") is None  # only the CPU lacks it
    assert reason("bf16", make_stack(torch="2.0.1"), "cpu") is None


def test_combination_names_every_missing_piece() -> None:
    stack = make_stack(accelerator=None, accelerate=None, torch="2.0.1")
    config = configs.get("offload+bettertransformer+fp16")
    reasons = unavailable_reasons(config, stack, "cpu")
    assert reasons == [
        "bettertransformer needs optimum<2.0 and transformers<4.49; found optimum 2.3.0, transformers 5.23.0",
        "cpu_offload needs an accelerator; none found",
        "cpu_offload needs the accelerate package; not installed",
        "fp16 on cpu needs torch>=2.1 (half LayerNorm kernel); found torch 2.0.1",
    ]
    assert unavailable_reason(config, stack, "cpu") == "; and ".join(reasons)


def test_combination_on_legacy_gpu_stack_is_available() -> None:
    stack = make_stack(accelerator="cuda", **LEGACY)
    for name in ("offload+bettertransformer", "offload+bettertransformer+fp16", "bettertransformer+fp16"):
        assert reason(name, stack, "cuda") is None, name


def test_combination_partly_missing_names_only_what_is_missing() -> None:
    stack = make_stack(accelerator="cuda", optimum="1.27.0", transformers="4.48.3", accelerate=None)
    assert reason("offload+bettertransformer+fp16", stack, "cuda") == (
        "cpu_offload needs the accelerate package; not installed"
    )
    stack = make_stack(accelerator="cuda", flash_attn=None)
    assert reason("fp16+flash_attention_2", stack, "cuda") == (
        "flash_attention_2 needs CUDA and the flash-attn package; found flash-attn not installed"
    )


def test_every_builtin_is_judged_on_both_stacks() -> None:
    """Whatever the stack, each reason says what a configuration needs and what was found instead."""
    for stack, device in (
        (make_stack(), "cpu"),
        (make_stack(accelerator="cuda", **LEGACY), "cuda"),
        (make_stack(accelerator="cuda", torch=None, optimum=None, accelerate=None), "cuda"),
    ):
        for config in configs.select():
            for why in unavailable_reasons(config, stack, device):
                assert " needs " in why, why  # what is required ...
                assert any(w in why for w in ("found", "not installed", "targets")), why  # ... and what is here


# --- compat ---------------------------------------------------------------------------------------------------


def test_dtype_kwarg_follows_transformers_version() -> None:
    assert compat.dtype_kwarg(make_stack(transformers="4.48.3")) == "torch_dtype"
    assert compat.dtype_kwarg(make_stack(transformers="4.55.4")) == "torch_dtype"
    assert compat.dtype_kwarg(make_stack(transformers="4.56.0")) == "dtype"
    assert compat.dtype_kwarg(make_stack(transformers="5.23.0")) == "dtype"
    assert compat.dtype_kwarg(make_stack(transformers="5.0.0rc1")) == "dtype"


class _LegacyOffload:
    """transformers 4.48: `gpu_id=` (an `accelerator_id=` would be rejected)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def enable_cpu_offload(self, gpu_id: int | None = 0) -> None:
        self.calls.append({"gpu_id": gpu_id})


class _ModernOffload:
    """transformers 5.x: `accelerator_id=`, unknown keywords swallowed."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def enable_cpu_offload(self, accelerator_id: int | None = 0, **kwargs: Any) -> None:
        self.calls.append({"accelerator_id": accelerator_id, **kwargs})


def test_enable_cpu_offload_legacy_signature() -> None:
    model = _LegacyOffload()
    compat.enable_cpu_offload(model, torch.device("cuda", 1))
    assert model.calls == [{"gpu_id": 1}]
    model = _LegacyOffload()
    compat.enable_cpu_offload(model, torch.device("cuda"))  # no index -> device 0
    assert model.calls == [{"gpu_id": 0}]


def test_enable_cpu_offload_modern_signature() -> None:
    model = _ModernOffload()
    compat.enable_cpu_offload(model, torch.device("cuda", 1))
    assert model.calls == [{"accelerator_id": 1}]  # not gpu_id: 5.x would swallow that silently


class _Compilable:
    def __init__(self) -> None:
        self.compiled: list[dict[str, Any]] = []

    def compile(self, **kwargs: Any) -> None:
        self.compiled.append(kwargs)


class _FakeBark:
    def __init__(self) -> None:
        self.semantic = _Compilable()
        self.coarse_acoustics = _Compilable()
        self.fine_acoustics = _Compilable()
        self.codec_model = _Compilable()


def test_compile_submodels_compiles_the_three_transformers_in_place() -> None:
    model = _FakeBark()
    semantic = model.semantic
    compat.compile_submodels(model, mode="reduce-overhead")
    assert model.semantic is semantic  # in place, never replaced by a wrapper that generate would bypass
    for name in ("semantic", "coarse_acoustics", "fine_acoustics"):
        assert getattr(model, name).compiled == [{"mode": "reduce-overhead"}], name
    assert model.codec_model.compiled == []


def test_stack_is_frozen_and_serializable() -> None:
    stack = make_stack(accelerator="cuda")
    with pytest.raises(dataclasses.FrozenInstanceError):
        stack.accelerator = None  # type: ignore[misc]
    assert stack.to_dict()["packages"]["transformers"] == "5.23.0"
    assert stack.version("flash-attn") is None
    assert stack.version("not-a-package") is None


def test_cpu_hardware_key_names_the_instruction_tier_a_hypervisors_model_name_hides() -> None:
    """Two "AMD EPYC" VMs, one with native bf16 and one without, ran tiny bf16 at 1.03x and 1.85x fp32's time
    (README): a baseline from one must never be compared silently with a run on the other."""
    from perf_utils.bark.environment import cpu_isa, hardware_key

    zen3 = {"fma", "avx", "avx2"}
    zen4 = zen3 | {"avx512f", "avx512_bf16"}
    assert (cpu_isa(zen3), cpu_isa(zen4), cpu_isa(zen4 | {"amx_bf16"})) == ("avx2", "avx512bf16", "amx")
    assert cpu_isa({"avx512f", "avx2"}) == "avx512"
    base = dataclasses.replace(make_stack(), cpu="AMD EPYC", cpu_count=2)
    keys = {hardware_key(dataclasses.replace(base, cpu_isa=cpu_isa(f)), "cpu") for f in (zen3, zen4)}
    assert keys == {"cpu-amd-epyc-2c-avx2", "cpu-amd-epyc-2c-avx512bf16"}
    assert hardware_key(base, "cpu") == "cpu-amd-epyc-2c"  # a stack that could not tell keeps the old key
    gpu = dataclasses.replace(base, cpu_isa="avx2", accelerator="cuda", accelerator_name="NVIDIA H200")
    assert hardware_key(gpu, "cuda") == "nvidia-h200"  # on an accelerator the GPU names the hardware
