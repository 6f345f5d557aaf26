"""The busy-GPU check, with NVML's process list faked (no GPU here)."""

import torch

from perf_utils.measure.trackers import nvml


def test_busy_gpu_message_lists_other_processes(monkeypatch):
    monkeypatch.setattr(nvml, "other_processes", lambda device: [(4242, 3 * 2**30), (77, 2**20)])
    msg = nvml.other_gpu_processes_message(torch.device("cuda", 0))
    assert msg == "2 other process(es) use cuda:0: pid 4242 (3072 MB), pid 77 (1 MB)"


def test_free_gpu_or_no_nvml_says_nothing(monkeypatch):
    monkeypatch.setattr(nvml, "other_processes", lambda device: [])
    assert nvml.other_gpu_processes_message(torch.device("cuda", 0)) is None
    monkeypatch.setattr(nvml, "other_processes", lambda device: None)
    assert nvml.other_gpu_processes_message(torch.device("cuda", 0)) is None


def test_cpu_has_no_nvml_handle():
    assert nvml.nvml_handle(torch.device("cpu")) is None
    assert nvml.other_processes(torch.device("cpu")) is None


def test_busy_cpu_message(monkeypatch):
    from perf_utils.bark import device

    monkeypatch.setattr("os.getloadavg", lambda: (7.5, 1.0, 1.0))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert device.cpu_busy_message() == (
        "the machine is busy before measuring (1-minute load 7.5 on 2 cores): CPU timings may be skewed"
    )
    monkeypatch.setattr("os.getloadavg", lambda: (0.2, 1.0, 1.0))
    assert device.cpu_busy_message() is None
