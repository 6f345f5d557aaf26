"""The thin, device-generic accelerator layer (`torch.accelerator`: CUDA, ROCm, XPU, MPS).

Everything else calls these few functions, so a CPU run goes through exactly the code a GPU run does;
on the CPU they are no-ops.
"""

from __future__ import annotations

import gc

import torch

from perf_utils.bark.environment import current_stack


class DeviceError(RuntimeError):
    pass


def resolve_device(spec: str | None = None) -> torch.device:
    """`auto` (default): the accelerator when there is one, else the CPU."""
    if spec in (None, "", "auto"):
        acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        return torch.device(acc.type, 0) if acc is not None else torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as exc:
        raise DeviceError(f"--bark-device {spec!r} is not a torch device ({exc})") from None
    if device.type != "cpu":
        acc = torch.accelerator.current_accelerator() if torch.accelerator.is_available() else None
        if acc is None or acc.type != device.type:
            found = f"its accelerator is {acc.type}" if acc is not None else "it has no accelerator torch can use"
            raise DeviceError(f"--bark-device {spec!r} asked for, but {found} on this machine (--bark-device cpu)")
        if device.index is None:
            device = torch.device(device.type, 0)
    return device


def is_accelerator(device: torch.device) -> bool:
    return device.type != "cpu"


def synchronize(device: torch.device) -> None:
    if is_accelerator(device):
        torch.accelerator.synchronize(device)


def _backend_initialized(device: torch.device) -> bool:
    """CUDA's allocator exists only once the device is first used: before that there is no peak to reset, and
    resetting raises 'Invalid device argument' (torch 2.11, H200). Backends with no such query: assume yes."""
    is_initialized = getattr(getattr(torch, device.type, None), "is_initialized", None)
    return bool(is_initialized()) if callable(is_initialized) else True


def reset_peak_memory(device: torch.device) -> None:
    if is_accelerator(device) and _backend_initialized(device):
        torch.accelerator.reset_peak_memory_stats(device)


def max_memory_allocated(device: torch.device) -> int | None:
    return torch.accelerator.max_memory_allocated(device) if is_accelerator(device) else None


def memory_allocated(device: torch.device) -> int | None:
    if not is_accelerator(device):
        return None
    return torch.accelerator.memory_allocated(device) if _backend_initialized(device) else 0


def free_memory(device: torch.device) -> int | None:
    """Bytes free on `device` (the host's MemAvailable for the CPU); None where it cannot be asked."""
    if is_accelerator(device):
        mem_get_info = getattr(getattr(torch, device.type, None), "mem_get_info", None)
        return int(mem_get_info(device)[0]) if callable(mem_get_info) else None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def release_memory(device: torch.device) -> None:
    """Between configurations: one configuration's memory must never show in the next one's peak."""
    gc.collect()
    if is_accelerator(device):
        synchronize(device)
        torch.accelerator.empty_cache()
        reset_peak_memory(device)


def cpu_busy_message(threshold: float = 0.5) -> str | None:
    """A CPU run on a machine already busy with other work times the neighbours, not Bark: say so up front."""
    import os

    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = max(current_stack().cpu_count, 1)
    if load <= threshold * cores:
        return None
    return (
        f"the machine is busy before measuring (1-minute load {load:.1f} on {cores} cores): CPU timings may be skewed"
    )
