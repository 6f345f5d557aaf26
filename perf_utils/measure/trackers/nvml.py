"""NVML access shared by the memory and energy trackers and the busy-GPU check; absent NVML -> None."""

from __future__ import annotations

import os
from typing import Any

import torch


def nvml_handle(device: torch.device) -> Any | None:
    """The NVML handle of a CUDA device, or None (not NVIDIA, no pynvml, no driver)."""
    if device.type != "cuda":
        return None
    try:
        import pynvml

        pynvml.nvmlInit()
        index = device.index or 0
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible:
            ids = [v.strip() for v in visible.split(",") if v.strip()]
            if index < len(ids) and ids[index].isdigit():
                index = int(ids[index])
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except Exception:  # noqa: BLE001 - NVML is an optional extra
        return None


def other_processes(device: torch.device) -> list[tuple[int, int]] | None:
    """(pid, used bytes) of other processes on the GPU; None when NVML cannot tell."""
    handle = nvml_handle(device)
    if handle is None:
        return None
    import pynvml

    try:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except pynvml.NVMLError:
        return None
    me = os.getpid()
    return [(p.pid, int(p.usedGpuMemory or 0)) for p in procs if p.pid != me]


def other_gpu_processes_message(device: torch.device) -> str | None:
    """Like optimum-benchmark's device isolation: another process on the GPU skews time and memory."""
    others = other_processes(device)
    if not others:
        return None
    listed = ", ".join(f"pid {pid} ({used / 2**20:.0f} MB)" for pid, used in others)
    return f"{len(others)} other process(es) use {device}: {listed}"
