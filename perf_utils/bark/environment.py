"""What software and hardware this process runs on.

Availability checks and baselines both need the same facts (versions, accelerator, compiler), so they are
read once into a plain dataclass: tests can build a `Stack` by hand to exercise every reason a
configuration cannot run, without installing another stack.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sys
from dataclasses import asdict, dataclass, field
from functools import cache

import torch
from packaging.version import Version

_PACKAGES = ("torch", "transformers", "optimum", "accelerate", "flash-attn", "nvidia-ml-py", "triton", "memray")


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def version_lt(found: str | None, bound: str) -> bool:
    return found is not None and Version(found) < Version(bound)


@dataclass(frozen=True)
class Stack:
    """Versions and devices; `None` means absent."""

    python: str
    packages: dict[str, str | None]
    accelerator: str | None  # device type: "cuda", "xpu", "mps", or None
    accelerator_name: str | None = None
    accelerator_count: int = 0
    cuda: str | None = None
    driver: str | None = None
    cpu: str = ""
    cpu_count: int = 0
    cpu_isa: str = ""  # the widest vector instructions the CPU has for Bark's dtypes (`cpu_isa`); "" unknown
    cxx_compiler: str | None = None
    offload_defect: str | None = None  # why accelerate's offload breaks Bark here (compat.offload_defect)
    extra: dict[str, str] = field(default_factory=dict)

    def version(self, package: str) -> str | None:
        return self.packages.get(package)

    def to_dict(self) -> dict:
        return asdict(self)


def _cpuinfo(field: str) -> str | None:
    """The first `field` line's value in /proc/cpuinfo; None where there is none (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


# Widest first: the first a CPU has names its tier. bf16 matmuls run natively only from avx512_bf16 on; below it
# torch converts, and bf16 went from 1.03x fp32's time to 1.85x on the same 2-core "AMD EPYC" VM (README).
_ISA_TIERS = (("amx_bf16", "amx"), ("avx512_bf16", "avx512bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))


def cpu_isa(flags: set[str] | None = None) -> str:
    """The CPU's instruction tier for Bark's dtypes: from /proc/cpuinfo's flags on x86 Linux, else torch's own
    dispatch level ("default", "vsx", "sve256", ...). Hypervisors name CPUs of different generations alike ("AMD
    EPYC"), so the model name alone cannot tell a CPU with native bf16 from one without."""
    if flags is None:
        flags = set((_cpuinfo("flags") or "").split())
    for flag, tier in _ISA_TIERS:
        if flag in flags:
            return tier
    return torch.backends.cpu.get_cpu_capability().lower().replace(" ", "")


def _nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return str(pynvml.nvmlSystemGetDriverVersion())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - NVML is optional; any failure means "no driver info"
        return None


@cache
def current_stack() -> Stack:
    from perf_utils.bark.compat import offload_defect  # compat builds on this module

    acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
    name = None
    count = 0
    if acc is not None:
        count = torch.accelerator.device_count()
        module = getattr(torch, acc.type, None)
        get_name = getattr(module, "get_device_name", None)
        name = get_name(0) if get_name else acc.type
    return Stack(
        python=platform.python_version(),
        packages={p: package_version(p) for p in _PACKAGES},
        accelerator=acc.type if acc is not None else None,
        accelerator_name=name,
        accelerator_count=count,
        cuda=torch.version.cuda if acc is not None and acc.type == "cuda" else None,
        driver=_nvidia_driver() if acc is not None and acc.type == "cuda" else None,
        cpu=_cpu_model(),
        cpu_isa=cpu_isa(),
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 0,
        cxx_compiler=shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++"),
        offload_defect=offload_defect(),
        extra={"platform": sys.platform},
    )


def hardware_key(stack: Stack, device_type: str) -> str:
    """A file-name-safe key for the hardware results were measured on.

    pytest-benchmark keys storage by OS and Python only; a latency figure means nothing without the GPU
    model (or, measuring on the CPU, its model, cores and instruction tier: `cpu_isa`).
    """
    if device_type != "cpu" and stack.accelerator_name:
        raw = f"{stack.accelerator_name}"
    else:
        raw = f"cpu-{stack.cpu}-{stack.cpu_count}c" + (f"-{stack.cpu_isa}" if stack.cpu_isa else "")
    safe = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in raw)
    while "--" in safe:
        safe = safe.replace("--", "-")
    return safe.strip("-").lower()
