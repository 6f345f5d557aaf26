"""`python -m perf_utils`: the configuration table, a real run on the tiny checkpoint, and usage errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perf_utils import cli, options
from perf_utils.bark import configs
from perf_utils.bark.checkpoints import ENV_CHECKPOINT, Checkpoint
from perf_utils.bark.configs import OptimizationConfig
from perf_utils.bark.device import resolve_device
from perf_utils.bark.environment import current_stack

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("torch_single_thread")


def _table_rows(table: str) -> dict[str, list[str]]:
    """github-style table -> {first cell: all cells}, its last cell's numbered notes (`[2]`) replaced by their
    text, joined as `configs.unavailable_reason` joins them."""
    import re

    notes = dict(re.findall(r"^\[(\d+)\] (.+)$", table, flags=re.MULTILINE))
    rows = {}
    for line in table.splitlines():
        if line.startswith("|") and not line.startswith("|--"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[-1].startswith("unavailable: "):
                cells[-1] = "; and ".join(notes[n] for n in re.findall(r"\[(\d+)\]", cells[-1]))
            rows[cells[0]] = cells
    return rows


def test_configs_subprocess_lists_every_configuration_with_its_availability(tmp_path: Path) -> None:
    env = {**os.environ, "BARK_PERF_CACHE": str(tmp_path / "cache")}
    env.pop(ENV_CHECKPOINT, None)
    done = subprocess.run(
        [sys.executable, "-m", "perf_utils", "configs"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    rows = _table_rows(done.stdout)
    device_type = resolve_device("auto").type  # what the child resolved `auto` to
    assert f"on {device_type}" in rows["configuration"]
    stack = current_stack()
    listed = {name for name in rows if name != "configuration"}
    assert listed == {c.name for c in configs.select()}  # every non-test configuration, nothing else
    for config in configs.select():
        expected = configs.unavailable_reason(config, stack, device_type) or "available"
        assert rows[config.name][2] == expected, config.name
        assert rows[config.name][1] == config.summary
    assert not (tmp_path / "cache").exists()  # listing builds nothing


def _configs_on_cpu(capsys: pytest.CaptureFixture[str]) -> dict[str, list[str]]:
    assert cli.main(["configs", "--device", "cpu"]) == 0
    return _table_rows(capsys.readouterr().out)


def test_configs_table_on_cpu_shows_the_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _configs_on_cpu(capsys)
    assert rows["fp32"][2] == "available"
    assert rows["cpu_offload"][2].startswith("cpu_offload needs an accelerator")
    assert rows["flash_attention_2"][2].startswith("flash_attention_2 needs CUDA")


def test_configs_table_says_each_reason_once_under_it(capsys: pytest.CaptureFixture[str]) -> None:
    """Five configurations need an accelerator on the CPU: one numbered note, not five copies of it."""
    assert cli.main(["configs", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("cpu_offload needs an accelerator") == 1, printed
    width = max(len(line) for line in printed.splitlines() if line.startswith("|"))
    assert width < 200, printed


def test_configs_table_hides_test_only_configurations(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(configs, "CONFIGS", dict(configs.CONFIGS))
    configs.register(OptimizationConfig("fault_injection", "test only", test_only=True))
    assert "fault_injection" not in _configs_on_cpu(capsys)


def test_run_fp32_prints_a_table_and_writes_json_with_fidelity(
    tiny_checkpoint: Checkpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)  # the default checkpoint: tiny, from the session cache
    path = tmp_path / "out" / "run.json"
    # The old name of the fp32 configuration is still taken (with a note), as are the repeatable option forms.
    argv = ["run", "--config", "baseline", "--batch-size", "1", "--rounds", "1", "--warmup", "1", "--invocations", "1"]
    # --device cpu: on a machine with an accelerator `auto` would pick it (and 256 tokens instead of 32)
    code = cli.main([*argv, "--device", "cpu", "--json", str(path), "--results-dir", str(tmp_path / "results")])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, out
    assert "configuration 'baseline' is now called 'fp32'" in captured.err

    rows = _table_rows(out)
    header = rows["benchmark"]
    columns = ("latency s", "samples/s", "RTF", "host alloc MB", "RSS rise MB", "semantic s", "coarse s", "fine s")
    for column in (*columns, "codec s"):
        assert column in header, column
    for column in ("accel peak MB", "NVML proc MB", "energy J"):  # no data on the CPU: dropped
        assert column not in header, column
    row = dict(zip(header, rows["bs1-fp32"], strict=True))
    assert row["rounds"] == "1"
    assert int(row["warm-up"]) >= 2  # warmed up until steady: at least two calls to tell
    assert row["sem tokens"] == "32"
    assert row["audio samples"] == "15360"
    assert row["fidelity"] == "ok"
    assert float(row["latency s"]) > 0
    assert "checkpoint tiny" in out
    assert f"run record written to {path}" in out

    data = json.loads(path.read_text())
    assert data["checkpoint"]["key"] == "tiny"
    assert data["device"] == "cpu"
    assert data["workload"]["n_tokens"] == 32
    assert len(data["results"]) == 1
    result = data["results"][0]
    assert (result["config"], result["batch_size"], result["status"]) == ("fp32", 1, "ok")
    # Fidelity figures, as the pytest run records them: the fp32 configuration against the fp32 eager reference.
    fid = result["fidelity"]
    assert fid["passed"] is True and fid["precision"] == "exact" and fid["problems"] == []
    assert set(fid["submodels"]) == {"semantic", "coarse", "fine", "codec"}
    assert fid["submodels"]["semantic"]["rel_err"] == 0.0 and fid["submodels"]["codec"]["snr_db"] == 200.0
    # ... and the run is kept like a pytest run, through the same end-of-run path
    kept = list((tmp_path / "results").glob("*/run.json"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["results"] == data["results"]
    assert f"run saved: {kept[0]}" in out
    assert len(result["rounds"]) == 1 and result["warmup"] == int(row["warm-up"])
    round_ = result["rounds"][0]
    for key in ("latency_s", "stage_semantic_s", "host_peak_mb", "host_alloc_peak_mb", "throughput_sps", "rtf"):
        assert key in round_, key
    assert round_["latency_s"] > 0
    assert round_["throughput_sps"] == pytest.approx(1 / round_["latency_s"])
    assert result["counts"]["semantic_tokens"] == 32
    assert result["counts"]["batch_size"] == 1
    assert tiny_checkpoint.path.exists()


def test_run_unknown_config_exits_2(tiny_checkpoint: Checkpoint, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", "--config", "warp_drive", "--device", "cpu", "--checkpoint", "tiny"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown configuration 'warp_drive'" in err
    assert "fp32" in err  # and what would have been valid


def test_run_unknown_checkpoint_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", "--config", "fp32", "--device", "cpu", "--checkpoint", "no such checkpoint"])
    err = capsys.readouterr().err
    assert code == 2
    assert "'no such checkpoint'" in err


def test_run_checkpoint_folder_without_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["run", "--config", "fp32", "--device", "cpu", "--checkpoint", str(tmp_path)])
    assert code == 2
    assert "no config.json" in capsys.readouterr().err


@pytest.mark.parametrize("prefix", ["--", "--bark-"])
def test_run_with_a_baseline_that_is_not_there_stops_before_measuring(
    prefix: str, tiny_checkpoint: Checkpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in --baseline is found before the run, not after it: exit 10, nothing measured or kept. The option
    as pytest spells it works too (the suite's messages name that spelling)."""
    results = tmp_path / "results"
    code = cli.main(["run", "--config", "fp32", "--batch-size", "1", "--device", "cpu", "--checkpoint", "tiny",
                     f"{prefix}baseline", str(tmp_path / "typo.json"), f"{prefix}results-dir={results}"])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 10, printed
    assert f"{tmp_path / 'typo.json'}: no such baseline file" in printed
    assert "nothing measured: the baseline file cannot be used (exit status 10)" in printed
    assert "medians:" not in printed and not results.exists()


def test_unknown_device_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["configs", "--device", "not-a-device"]) == 2
    assert "'not-a-device'" in capsys.readouterr().err


def test_an_accelerator_this_machine_lacks_is_said_with_what_to_ask_for(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.accelerator.is_available():
        pytest.skip("this machine has an accelerator; the message is for one without")
    assert cli.main(["configs", "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--bark-device 'cuda' asked for, but it has no accelerator torch can use on this machine" in err
    assert "(--bark-device cpu)" in err


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        *(("remeasure-noisy", v, "seconds, a number of at least 0") for v in ("soon", "-5", "nan")),
        *(("time-threshold", v, "a fraction above 0 and at most 1") for v in ("7%", "0", "1.5")),
    ],
)
def test_an_option_value_of_the_wrong_kind_is_a_usage_error_naming_the_option(
    option: str, value: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["gate", "run.json", f"--{option}={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--{option}" in err and f"'{value}': {why}" in err


@pytest.mark.parametrize(
    ("option", "value", "why"),
    [
        ("tokens", "5", "a whole number of at least 8 (fewer may end the speech at once"),
        ("rounds", "0", "a whole number of at least 1"),
        ("threads", "0", "a whole number of at least 1"),
        ("warmup", "-1", "a whole number of at least 0"),
        ("shard", "5/4", "K must be between 1 and N"),
    ],
)
def test_a_run_option_out_of_range_is_refused_before_measuring(
    option: str, value: str, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Zero rounds used to measure every benchmark and fail each with "no measured rounds"; zero threads was taken
    as torch's default; too few tokens stopped only once the run began, naming a field, not the option."""
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", f"--{option}={value}"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"--{option}" in err and f"'{value}': {why}" in err


def test_the_cli_takes_each_option_as_pytest_spells_it_up_to_the_pytest_arguments() -> None:
    argv = ["run", "--bark-tokens=8", "--bark-save-golden", "--bark-config", "fp32", "--bark-history", "h",
            "--bark-nonesuch", "--json", "x", "--", "--bark-rounds", "1"]  # fmt: skip
    assert options.cli_spelling(argv) == [
        "run", "--tokens=8", "--save-golden", "--config", "fp32", "--history", "h",
        "--bark-nonesuch", "--json", "x", "--", "--bark-rounds", "1"]  # fmt: skip


def test_every_option_a_message_names_is_one_both_front_ends_take() -> None:
    """Messages name options as pytest spells them; a renamed option must not leave a message naming the old one
    (the CLI takes the same spelling: `options.cli_spelling`)."""
    import re

    names = {n for o in options.RUN + options.FINISH for n in (o.name, *o.aliases)}
    root = Path(__file__).resolve().parents[1]
    named = {(p.relative_to(root).as_posix(), m) for p in [*(root / "perf_utils").rglob("*.py"), root / "README.md"]
             for m in re.findall(r"--bark-([a-z0-9-]+)", p.read_text(encoding="utf-8"))}  # fmt: skip
    assert len(named) > 20
    assert sorted((f, n) for f, n in named if n not in names) == []


def test_the_readmes_gate_quality_commands_still_parse() -> None:
    """The option checks refuse what cannot run, never a documented use (`--repeats 0 --processes 20`: only the
    cross-process A/A)."""
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    commands = [ln.split("#")[0] for ln in readme.splitlines()
                if ln.startswith("python -m perf_utils gate-quality") and not ln.rstrip().endswith("\\")]  # fmt: skip
    assert any("--repeats 0" in c for c in commands), commands
    for command in commands:
        cli._parser().parse_args(shlex.split(command)[3:])


def test_a_tokens_environment_variable_out_of_range_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BARK_PERF_TOKENS", "many")
    assert cli.main(["run", "--configs", "fp32"]) == 2
    assert "BARK_PERF_TOKENS='many': a whole number of at least 8" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("given", "saving", "expected"), [(None, False, 3), (None, True, 10), (4, True, 4), (1, False, 1)]
)
def test_a_baseline_takes_more_invocations_than_a_run_unless_told(given, saving, expected) -> None:
    """Every later run is judged against the baseline's level, so saving one takes BASELINE_INVOCATIONS."""
    from perf_utils.measure.run import RunPlan
    from perf_utils.options import RunOptions

    asked = {"bark_device": "cpu", "bark_invocations": given, "bark_save_baseline": saving}
    assert RunPlan.of(RunOptions.read(asked.get)).invocations == expected


def test_run_cold_with_no_warm_up(
    tiny_checkpoint: Checkpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--warmup 0` measures cold: no warm-up call at all, and the progress has no estimate yet to give."""
    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    argv = ["run", "--configs", "fp32", "--batch-sizes", "1", "--rounds", "1", "--warmup", "0", "--no-fidelity"]
    argv += ["--invocations", "1"]
    code = cli.main([*argv, "--device", "cpu", "--results-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    row = dict(zip(_table_rows(captured.out)["benchmark"], _table_rows(captured.out)["bs1-fp32"], strict=True))
    assert row["warm-up"] == "0" and row["rounds"] == "1" and row["fidelity"] == "-"
    assert "bs1-fp32: round 1/1\n" in captured.err and "warm-up" not in captured.err


def test_run_measures_only_its_shard_and_keeps_it_named_so(
    tiny_checkpoint: Checkpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --shard` selects as `pytest benchmarks --bark-shard` does (it measured every configuration before), and
    the kept run says which shard it is, for `merge`."""
    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    argv = ["run", "--configs", "fp32,fp16", "--batch-sizes", "1", "--rounds", "1", "--warmup", "0", "--no-fidelity"]
    argv += ["--invocations", "1", "--shard", "2/2"]  # fp16 is shard 1's; fp32 is in every shard
    code = cli.main([*argv, "--device", "cpu", "--results-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == 0, captured.out + captured.err
    (kept,) = tmp_path.glob("*/run.json")
    data = json.loads(kept.read_text())
    assert [r["config"] for r in data["results"]] == ["fp32"]
    assert data["schedule"]["shard"] == "2/2" and kept.parent.name.endswith("-tiny-shard2of2")


def test_gate_quality_refuses_a_shard_rather_than_measure_everything(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["gate-quality", "--shard", "1/2", "--device", "cpu"]) == 2
    assert "--shard: gate-quality measures every scenario in one session" in capsys.readouterr().err


def test_run_interrupted_keeps_and_reports_what_it_measured_and_exits_130(
    tiny_checkpoint: Checkpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C as the second round begins (raised from the progress line, where a real one would land): the
    table shows the first round, the run is kept with where it stopped, and the exit status is the shell's 130."""
    from perf_utils.measure import run as run_module
    from perf_utils.record import store

    def progress(message: str) -> None:
        if "round 2/2" in message:
            raise KeyboardInterrupt

    monkeypatch.delenv(ENV_CHECKPOINT, raising=False)
    monkeypatch.setattr(run_module, "stderr_progress", progress)
    argv = ["run", "--configs", "fp32", "--batch-sizes", "1", "--rounds", "2", "--warmup", "0", "--no-fidelity"]
    code = cli.main([*argv, "--invocations", "1", "--device", "cpu", "--results-dir", str(tmp_path)])
    captured = capsys.readouterr()
    assert code == cli.EXIT_INTERRUPTED == 130, captured.out + captured.err
    row = dict(zip(_table_rows(captured.out)["benchmark"], _table_rows(captured.out)["bs1-fp32"], strict=True))
    assert row["rounds"] == "1"
    assert "INTERRUPTED (interrupted in invocation 1 of 1: its rounds so far are kept)" in captured.out
    [kept] = tmp_path.glob("*/run.json")
    assert store.load(kept).interrupted == "interrupted in invocation 1 of 1: its rounds so far are kept"
