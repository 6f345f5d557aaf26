"""The embedded tiny checkpoint: deterministic, round-trips through from_pretrained, cached per version,
built atomically; and `resolve` fails with advice when a checkpoint cannot be found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from safetensors.torch import load_file
from transformers import BarkModel

from perf_utils.bark import checkpoints
from perf_utils.bark.checkpoints import Checkpoint, CheckpointError
from perf_utils.bark.loading import load_processor
from perf_utils.bark.workload import PROMPTS

pytestmark = pytest.mark.usefixtures("torch_single_thread")


@dataclass
class Build:
    path: Path
    model: Any  # the in-memory BarkModel that build saved
    rng_unchanged: bool


@pytest.fixture(scope="module")
def second_build(torch_single_thread: None, tmp_path_factory: pytest.TempPathFactory) -> Build:
    """A second, independent `build` (the session checkpoint is the first), capturing the in-memory model
    it saves; the global RNG is set to something else first, and must be left untouched by the build."""
    target = tmp_path_factory.mktemp("second-build") / "tiny"
    captured: list[Any] = []
    original_save = BarkModel.save_pretrained

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        captured.append(self)
        return original_save(self, *args, **kwargs)

    torch.manual_seed(987_654)
    rng_before = torch.random.get_rng_state()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(BarkModel, "save_pretrained", spy)
        checkpoints.build(target)
    rng_unchanged = torch.equal(rng_before, torch.random.get_rng_state())
    assert len(captured) == 1, "build should save exactly one BarkModel"
    return Build(target, captured[0], rng_unchanged)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.glob("*.safetensors"))
    assert files, f"no safetensors weights in {folder}"
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(f))
    return tensors


def _assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert torch.equal(a[name], b[name]), f"tensor {name} differs"


def test_tiny_build_is_deterministic_weights(tiny_checkpoint: Checkpoint, second_build: Build) -> None:
    first, second = _weights(tiny_checkpoint.path), _weights(second_build.path)
    assert len(first) > 50  # four sub-models' worth of tensors, not an empty file
    _assert_same_tensors(first, second)


def test_tiny_build_leaves_global_rng_alone(second_build: Build) -> None:
    assert second_build.rng_unchanged


def test_tiny_build_is_deterministic_tokenizer(tiny_checkpoint: Checkpoint, second_build: Build) -> None:
    first = load_processor(tiny_checkpoint).tokenizer
    second = load_processor(Checkpoint(key="second", path=second_build.path, kind="local")).tokenizer
    assert (second_build.path / "vocab.txt").read_text() == (tiny_checkpoint.path / "vocab.txt").read_text()
    for prompt in PROMPTS:
        ids_first = first(prompt)["input_ids"]
        assert ids_first == second(prompt)["input_ids"], prompt
        # the fixed vocabulary covers every prompt: no unknown tokens
        assert first.unk_token_id not in ids_first, prompt
        # cased like Bark's real tokenizer (do_lower_case=False survives the reload)
        assert first.convert_ids_to_tokens(ids_first)[1][0] == prompt[0]


def test_tiny_round_trips_through_from_pretrained(second_build: Build) -> None:
    built = second_build.model.state_dict()
    loaded_model = BarkModel.from_pretrained(str(second_build.path))
    loaded = loaded_model.state_dict()
    assert sorted(built) == sorted(loaded)
    for name, tensor in built.items():
        assert torch.equal(tensor, loaded[name]), f"{name} changed in save_pretrained/from_pretrained"
    # the nested generation config survives too (the tiny fine window, the codec's rate)
    gen = loaded_model.generation_config
    assert gen.fine_acoustics_config["max_fine_input_length"] == 256
    assert gen.sample_rate == 24_000


def test_cache_folder_is_keyed_by_transformers_and_fixture_version(
    tiny_checkpoint: Checkpoint, bark_perf_cache: Path
) -> None:
    name = tiny_checkpoint.path.name
    assert f"transformers-{transformers.__version__}" in name
    assert f"v{checkpoints.TINY_FIXTURE_VERSION}" in name
    assert tiny_checkpoint.path.parent == bark_perf_cache
    assert tiny_checkpoint.key == "tiny"
    assert tiny_checkpoint.kind == "tiny"
    assert tiny_checkpoint.revision == f"v{checkpoints.TINY_FIXTURE_VERSION}"
    assert (tiny_checkpoint.path / "config.json").is_file()


def test_cached_tiny_is_reused_without_rebuilding(tiny_checkpoint: Checkpoint, monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_build(target: Path, name: str = "tiny") -> None:
        raise AssertionError("the cached tiny checkpoint was rebuilt")

    monkeypatch.setattr(checkpoints, "build", must_not_build)
    assert checkpoints.resolve("tiny").path == tiny_checkpoint.path
    monkeypatch.delenv(checkpoints.ENV_CHECKPOINT, raising=False)
    assert checkpoints.resolve(None).path == tiny_checkpoint.path  # tiny is the default


def test_crash_during_build_leaves_no_cache_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv(checkpoints.ENV_CACHE, str(cache))

    def crash(target: Path, name: str = "tiny") -> None:
        target.mkdir(parents=True)
        (target / "model.safetensors").write_bytes(b"half a model")  # written before the crash
        raise RuntimeError("simulated crash in the middle of build")

    monkeypatch.setattr(checkpoints, "build", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        checkpoints.resolve("tiny")
    assert not checkpoints.built_dir(checkpoints.TINY).exists()
    assert list(cache.iterdir()) == [], "a half-written build (or its staging folder) was left behind"


def test_local_folder(tiny_checkpoint: Checkpoint) -> None:
    ck = checkpoints.resolve(str(tiny_checkpoint.path))
    assert ck.kind == "local"
    assert ck.path == tiny_checkpoint.path.resolve()
    assert ck.key == f"local:{tiny_checkpoint.path.name}"


def test_folder_without_config_json(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no config.json") as err:
        checkpoints.resolve(str(tmp_path))
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize("spec", ["not a checkpoint", "a/b/c", "./missing-folder"])
def test_nonsense_spec(spec: str) -> None:
    with pytest.raises(CheckpointError, match=r"neither a built one \(tiny, random:bark-small, random:bark\)") as err:
        checkpoints.resolve(spec)
    assert repr(spec) in str(err.value)


def test_hub_id_not_cached_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hf_constants

    hf_home = tmp_path / "hf-home"
    hf_home.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    # huggingface_hub reads these at import time: the environment alone would not move an imported cache
    monkeypatch.setattr(hf_constants, "HF_HOME", str(hf_home))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(hf_home / "hub"))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as err:
        checkpoints.resolve("suno/bark-small")
    message = str(err.value)
    assert "'suno/bark-small'" in message
    assert "HF_HUB_OFFLINE" in message
    assert "`hf download suno/bark-small`" in message


# --- the real-shaped built checkpoints ----------------------------------------------------------------------------

PUBLISHED = {  # suno/bark-small and suno/bark: width, layers, heads of each GPT, and the parameter count
    "random:bark-small": (768, 12, 12, 404.4e6),
    "random:bark": (1024, 24, 16, 1100.6e6),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_real_shaped_configs_have_the_published_shapes(name: str) -> None:
    """Config only (no weights: suno/bark's 1.1B parameters are counted on the meta device)."""
    import torch
    from transformers import BarkModel

    width, layers, heads, params = PUBLISHED[name]
    config = checkpoints.bark_config(name)
    for sub in (config.semantic_config, config.coarse_acoustics_config, config.fine_acoustics_config):
        assert (sub.hidden_size, sub.num_layers, sub.num_heads, sub.block_size, sub.bias) == (
            width, layers, heads, 1024, False,
        )  # fmt: skip
    assert (config.semantic_config.input_vocab_size, config.semantic_config.output_vocab_size) == (129_600, 10_048)
    assert config.coarse_acoustics_config.output_vocab_size == 12_096
    assert (config.fine_acoustics_config.n_codes_total, config.fine_acoustics_config.n_codes_given) == (8, 1)
    codec = config.codec_config
    assert (codec.sampling_rate, codec.num_filters, codec.hidden_size) == (24_000, 32, 128)  # the real EnCodec
    with torch.device("meta"):
        counted = sum(p.numel() for p in BarkModel(config).parameters())
    assert abs(counted - params) < 0.1e6, counted


def test_a_real_shaped_checkpoint_is_built_once_and_keyed_as_its_own(tmp_path: Path, capsys, monkeypatch) -> None:
    """random:bark-small built offline (own weights, the fine window of Bark: 1024 frames), run at 8 tokens, keyed
    `random:bark-small` (never suno/bark-small), and read back from the cache the second time."""
    import json

    from perf_utils import cli

    out = tmp_path / "run.json"
    argv = ["run", "--checkpoint", "random:bark-small", "--configs", "fp32", "--batch-sizes", "1", "--tokens", "8",
            "--rounds", "1", "--warmup", "0", "--invocations", "1", "--no-fidelity", "--device", "cpu",
            "--json", str(out), "--results-dir", str(tmp_path / "results")]  # fmt: skip
    assert cli.main(argv) == 0, capsys.readouterr()
    record = json.loads(out.read_text())
    assert record["checkpoint"] == {"key": "random:bark-small", "kind": "random", "revision": "v3"}
    [result] = record["results"]
    assert result["status"] == "ok" and result["counts"]["semantic_tokens"] == 8
    folder = checkpoints.built_dir("random:bark-small")
    assert (folder / "config.json").exists() and json.loads((folder / "config.json").read_text())[
        "fine_acoustics_config"]["hidden_size"] == 768  # fmt: skip

    def must_not_build(target: Path, name: str = "tiny") -> None:
        raise AssertionError("the cached checkpoint was rebuilt")

    monkeypatch.setattr(checkpoints, "build", must_not_build)
    assert checkpoints.resolve("random:bark-small").path == folder
