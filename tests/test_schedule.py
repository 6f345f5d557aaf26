"""The run's schedule: invocations (worker processes), randomized interleaved trials, models loaded together only
when they fit, and the drift-free ratios to fp32 that interleaving makes possible, judged by the gate."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import replace

import pytest
import torch

from perf_utils.bark import configs
from perf_utils.bark import device as dev
from perf_utils.gate.compare import REGRESSED, UNCHANGED, compare_result
from perf_utils.gate.thresholds import Thresholds
from perf_utils.measure import run as run_module
from perf_utils.measure import worker
from perf_utils.measure.faults import inject
from perf_utils.measure.run import Case, RunPlan, cases, together_or_why, trials
from perf_utils.record.metrics import HOST_PROBE, INVOCATION_PROBE
from perf_utils.record.ratios import LATENCY_RATIO, PEAK_RATIO, add_ratios
from perf_utils.record.record import FAILED, OK, BenchmarkResult, RunRecord

FP32, FP16 = configs.get("fp32"), configs.get("fp16")


# --- interleaved trials --------------------------------------------------------------------------------------------


def test_each_trial_measures_every_case_once_in_a_fresh_random_order():
    selected = cases([FP32, FP16, configs.get("bf16")], [1, 8])
    order = trials(selected, rounds=20, rng=random.Random(0))
    chunks = [order[i : i + len(selected)] for i in range(0, len(order), len(selected))]
    assert len(chunks) == 20 and all(sorted(map(str, c)) == sorted(map(str, selected)) for c in chunks)
    assert len({tuple(map(str, c)) for c in chunks}) > 10  # not one fixed order repeated
    firsts = Counter(str(c[0]) for c in chunks)
    assert len(firsts) >= 4  # every case gets to go first now and then: no case always runs on a cold cache
    assert trials(selected, 20, random.Random(0)) == order  # the seed is recorded, so the order repeats


def test_models_are_loaded_together_only_when_they_fit(tiny_checkpoint, monkeypatch):
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=1, warmup=0)
    weights = run_module.weights_bytes(tiny_checkpoint)
    assert weights > 0
    monkeypatch.setattr(dev, "free_memory", lambda device: int(weights * 4 * 2.5))
    assert together_or_why(plan, 4) is None
    monkeypatch.setattr(dev, "free_memory", lambda device: int(weights * 4))
    why = together_or_why(plan, 4)
    assert why is not None and "4 models of tiny" in why and "configuration by configuration" in why
    assert together_or_why(plan, 1) is None  # one model: nothing to interleave with


def test_an_invocation_that_cannot_hold_every_model_goes_config_by_config(tiny_checkpoint, monkeypatch):
    monkeypatch.setattr(dev, "free_memory", lambda device: 1)
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=2, warmup=0)
    run = run_module.Run(plan, check_fidelity=False)
    record = run.measure_all(cases([FP32, FP16], [1]))
    assert record.schedule.interleaved is False and "configuration by configuration" in record.schedule.note
    assert [r.status for r in record.results] == [OK, OK]
    assert all(len(r.rounds) == 2 for r in record.results)
    # every round carries the host's speed right after it (`measure.probe`), timed outside the call
    assert all(r[HOST_PROBE] > 0 for res in record.results for r in res.rounds)
    for res in record.results:  # not interleaved: the host's speed is read from the configuration's own rounds
        assert {r[INVOCATION_PROBE] for r in res.rounds} == {sum(r[HOST_PROBE] for r in res.rounds) / 2}


def test_the_hosts_speed_of_an_invocation_is_read_from_every_benchmarks_probes(tiny_checkpoint):
    """Two benchmarks interleaved in two trials: every round carries the median of the invocation's four probes
    (`INVOCATION_PROBE`, what the gate divides by), not of its own two."""
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=2, warmup=0)
    run = run_module.Run(plan, check_fidelity=False)
    record = run.measure_all(cases([FP32], [1, 2]))
    probes = sorted(r[HOST_PROBE] for res in record.results for r in res.rounds)
    assert len(probes) == 4 and record.schedule.interleaved is True
    assert {r[INVOCATION_PROBE] for res in record.results for r in res.rounds} == {(probes[1] + probes[2]) / 2}


# --- invocations ---------------------------------------------------------------------------------------------------


def _result(config: str, rounds: list[float], status: str = OK, reason: str | None = None) -> BenchmarkResult:
    return BenchmarkResult(config, 1, status, reason, rounds=[{"latency_s": v} for v in rounds])


def test_invocations_are_joined_with_their_labels_and_a_failure_says_which():
    joined = BenchmarkResult.of_invocations([_result("fp32", [1.0, 1.1]), _result("fp32", [2.0, 2.1, 2.2])])
    assert joined.values("latency_s") == [1.0, 1.1, 2.0, 2.1, 2.2]
    assert joined.invocations == [0, 0, 1, 1, 1]
    assert joined.groups("latency_s") == [[1.0, 1.1], [2.0, 2.1, 2.2]]
    failed = BenchmarkResult.of_invocations([_result("fp32", [1.0]), _result("fp32", [], FAILED, "RuntimeError: x")])
    assert failed.status == FAILED and failed.reason == "RuntimeError: x (invocation 2 of 2)"


def test_a_worker_process_rebuilds_an_injected_fault_and_reports_its_failure(tiny_checkpoint):
    """A real worker: the crash fault, injected in this process, must crash there too; its traceback comes back."""
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=1, warmup=0, invocations=2)
    lines: list[str] = []
    done = worker.invoke(plan, [Case(inject(FP32, "crash"), 1)], 1, False, lines.append)
    [result] = done.results
    assert result.status == FAILED and result.reason == "RuntimeError: injected crash"
    assert "injected crash" in done.tracebacks["bs1-fp32"] and "Traceback" in done.tracebacks["bs1-fp32"]
    assert any("loading fp32" in line for line in lines), lines


def test_a_device_error_says_where_each_sub_models_weights_sat(tiny_checkpoint):
    """The H200's offload crash read 'index is on cuda:0, different from other tensors on cpu' and nothing more;
    the failure now names the layer on the other device."""
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=1, warmup=0)
    record = run_module.Run(plan, check_fidelity=False).measure_all([Case(inject(FP32, "misplaced_weights"), 1)])
    [result] = record.results
    assert result.status == FAILED and "device" in result.reason
    assert (
        "[weights: semantic: cpu (input_embeds_layer, layers, layernorm_final, lm_head), meta (position_embeds_layer)"
        in result.reason
    )
    assert "coarse_acoustics: cpu" in result.reason


def test_a_worker_that_dies_fails_its_benchmarks_with_its_last_words(tiny_checkpoint):
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=1, warmup=0, invocations=2)
    ghost = configs.OptimizationConfig("not_registered", "only in this process")
    done = worker.invoke(plan, [Case(ghost, 1)], 0, False)
    [result] = done.results
    assert result.status == FAILED
    assert "worker process of invocation 1 exited with status 1" in result.reason
    assert "unknown configuration 'not_registered'" in result.reason


# --- interrupted runs ------------------------------------------------------------------------------------------------


def _ctrl_c_at(marker: str):
    """A progress callback that raises KeyboardInterrupt, as Ctrl-C would, when the run loop says `marker`."""

    def progress(message: str) -> None:
        if marker in message:
            raise KeyboardInterrupt

    return progress


def test_ctrl_c_in_an_invocation_in_this_process_keeps_the_rounds_it_took(tiny_checkpoint):
    """Interrupted as the second trial begins: every benchmark keeps its first round, none is `failed`, the
    record says where it stopped, and the interrupt still reaches the caller (pytest then stops)."""
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=2, warmup=0)
    run = run_module.Run(plan, _ctrl_c_at("round 2/2"), check_fidelity=False)
    with pytest.raises(KeyboardInterrupt):
        run.measure_all(cases([FP32], [1, 2]))
    record = run.record
    assert sorted(r.id for r in record.results) == ["bs1-fp32", "bs2-fp32"]
    assert all(r.status == OK and len(r.rounds) == 1 for r in record.results)
    assert record.interrupted == "interrupted in invocation 1 of 1: its rounds so far are kept"
    assert record.schedule.invocations == 1 and record.schedule.rounds == 2


def test_ctrl_c_before_any_round_keeps_nothing(tiny_checkpoint):
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=2, warmup=0)
    run = run_module.Run(plan, _ctrl_c_at("round 1/2"), check_fidelity=False)
    with pytest.raises(KeyboardInterrupt):
        run.measure_all(cases([FP32], [1]))
    assert run.record.results == [] and run.record.interrupted is None


def test_ctrl_c_in_a_worker_that_writes_nothing_back_keeps_the_whole_ones_before_it(tiny_checkpoint, monkeypatch):
    """Three invocations, Ctrl-C during the third, whose worker writes nothing back (it died, or hung past the
    wait): the two whole invocations are the record, labelled as such, and the record says the third was lost."""
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=2, warmup=0, invocations=3)
    in_process = run_module.Run(replace(plan, invocations=1), check_fidelity=False)

    def invoke(plan, selected, index, check_fidelity, progress=None):
        if index == 2:
            raise KeyboardInterrupt
        return in_process.invocation(selected, index)

    monkeypatch.setattr(worker, "invoke", invoke)
    run = run_module.Run(plan, check_fidelity=False)
    with pytest.raises(KeyboardInterrupt):
        run.measure_all(cases([FP32], [1]))
    [result] = run.record.results
    assert result.status == OK and result.invocations == [0, 0, 1, 1]
    assert run.record.interrupted == "interrupted in invocation 3 of 3: what its worker process measured is lost"
    assert run.record.schedule.invocations == 2


def test_ctrl_c_during_a_worker_invocation_keeps_its_rounds_so_far_too(tiny_checkpoint):
    """Two real worker invocations, Ctrl-C in this process (only here, as a CI runner sends it) as the second
    one's second trial begins: the worker is interrupted too and writes back the round each benchmark took, so
    the record holds invocation 1 whole and invocation 2's first round."""
    plan = RunPlan(tiny_checkpoint, torch.device("cpu"), n_tokens=8, rounds=2, warmup=0, invocations=2)

    pressed: list[str] = []

    def progress(message: str) -> None:
        if message.startswith("invocation 2/2") and "round 2/2" in message and not pressed:
            pressed.append(message)
            raise KeyboardInterrupt

    run = run_module.Run(plan, progress, check_fidelity=False)
    with pytest.raises(KeyboardInterrupt) as cut:
        run.measure_all(cases([FP32], [1, 2]))
    assert type(cut.value) is KeyboardInterrupt  # the interrupt itself goes on (pytest: "KeyboardInterrupt")
    record = run.record
    assert record.interrupted == "interrupted in invocation 2 of 2: its rounds so far are kept"
    for result in record.results:
        assert result.status == OK and result.invocations[:2] == [0, 0], result
        assert result.invocations[2:] in ([1], [1, 1])  # the round it took (a second one if it was that quick)


def test_a_worker_heeds_only_the_first_interrupt_so_a_second_cannot_cut_its_writing(tmp_path):
    """A terminal's Ctrl-C reaches the worker and its parent, and the parent passes its own on: the worker's
    handler raises once, then ignores SIGINT while it writes back its rounds."""
    kept = tmp_path / "kept"
    code = (
        "import signal, sys, time\nfrom perf_utils.measure.worker import _interrupt_once\n"
        "signal.signal(signal.SIGINT, _interrupt_once)\nprint('ready', flush=True)\n"
        "try:\n    time.sleep(30)\nexcept KeyboardInterrupt:\n    print('writing', flush=True)\n"
        f"    time.sleep(1.0)\n    open({str(kept)!r}, 'w').write('rounds')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.readline() == "writing\n"
    proc.send_signal(signal.SIGINT)  # the second, while it writes
    assert proc.wait(timeout=30) == 0
    assert kept.read_text() == "rounds"


# --- drift-free ratios ---------------------------------------------------------------------------------------------


def interleaved_record(
    fp16_latency: float, fp16_peak: float, seed: int, drift: float = 1.0, machine: float = 1.0
) -> RunRecord:
    """fp32 and fp16 at batch 1, 3 invocations x 5 interleaved trials on a machine `machine` times slower than
    usual; every call of trial t is `drift`^t slower (a machine getting busier), each invocation at its own level,
    each call with 1% of its own noise."""
    rng = random.Random(seed)
    rounds: dict[str, list[dict[str, float]]] = {"fp32": [], "fp16": []}
    for _ in range(3):
        level = machine * rng.gauss(1, 0.05)
        for t in range(5):
            for name, latency, peak in (("fp32", 1.0, 20.0), ("fp16", fp16_latency, fp16_peak)):
                lat = latency * level * drift**t * rng.gauss(1, 0.01)
                rounds[name].append({"latency_s": lat, "throughput_sps": 1 / lat, "host_peak_mb": peak})
    results = [BenchmarkResult(n, 1, OK, rounds=r, invocations=[i // 5 for i in range(15)]) for n, r in rounds.items()]
    record = RunRecord("cpu-x", "cpu", {"key": "tiny", "kind": "tiny"}, {}, {}, results)
    add_ratios(record)
    return record


def test_ratios_pair_each_round_with_fp32_of_the_same_trial():
    record = interleaved_record(0.5, 10.0, seed=0)
    fp32, fp16 = record.by_id()["bs1-fp32"], record.by_id()["bs1-fp16"]
    assert LATENCY_RATIO not in fp32.metrics()
    for a, b in zip(fp32.rounds, fp16.rounds, strict=True):
        assert b[LATENCY_RATIO] == pytest.approx(b["latency_s"] / a["latency_s"])
        assert b[PEAK_RATIO] == pytest.approx(0.5)


def test_a_machine_slower_today_moves_latency_but_not_the_ratios():
    """Today 40% slower overall and drifting 5% per trial: latency calls a regression, the ratios see none."""
    base = interleaved_record(0.5, 10.0, seed=1)
    now = interleaved_record(0.5, 10.0, seed=2, drift=1.05, machine=1.4)
    verdict = compare_result(base.by_id()["bs1-fp16"], now.by_id()["bs1-fp16"], Thresholds())
    assert verdict.metric("latency_s").verdict == REGRESSED
    assert verdict.metric(LATENCY_RATIO).verdict == UNCHANGED, verdict.metric(LATENCY_RATIO)
    assert verdict.metric(PEAK_RATIO).verdict == UNCHANGED


def test_fp16_no_longer_halving_memory_fails_on_its_ratio_alone():
    """fp16's peak goes from half of fp32's to all of it while fp32's own figures stay put."""
    base = interleaved_record(0.5, 10.0, seed=3)
    now = interleaved_record(0.5, 20.0, seed=4)
    verdict = compare_result(base.by_id()["bs1-fp16"], now.by_id()["bs1-fp16"], Thresholds())
    assert verdict.verdict == REGRESSED
    assert verdict.metric(PEAK_RATIO).verdict == REGRESSED and verdict.metric(PEAK_RATIO).change == pytest.approx(1.0)
