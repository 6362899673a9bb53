"""``load_model``: what a name resolves to, the family read from the config, processor options, and clear errors."""

from __future__ import annotations

import json

import pytest

from fgvlm.config import ConfigError
from fgvlm.models.base import ModelConfig
from fgvlm.models.loading import (
    ModelLoadError,
    ModelSource,
    choose_dtype,
    choose_family,
    detect_family,
    load_model,
    resolve_source,
)
from fgvlm.registry import UnknownNameError


@pytest.mark.parametrize(
    ("config", "family"),
    [
        ({"model_type": "qwen3_vl"}, "qwen3-vl"),
        ({"model_type": "qwen2_5_vl"}, "qwen2.5-vl"),
        ({"model_type": "idefics2"}, "idefics2"),
        ({"model_type": "idefics3"}, "smolvlm"),  # HuggingFaceTB/SmolVLM-Instruct
        ({"model_type": "smolvlm"}, "smolvlm"),
        (
            {"model_type": "instructblip", "text_config": {"model_type": "t5", "is_encoder_decoder": True}},
            "instructblip-t5",
        ),
        ({"model_type": "instructblip", "text_config": {"model_type": "llama"}}, "instructblip"),
        ({"model_type": "instructblip", "text_config": {"model_type": "opt"}}, "instructblip"),
    ],
)
def test_family_is_read_from_model_type(config, family):
    assert detect_family(config) == family


def test_unknown_model_type_asks_for_a_family():
    with pytest.raises(ModelLoadError, match="model_type 'llava'.*model.family"):
        detect_family({"model_type": "llava"})


def test_presets_resolve_to_hub_ids_with_their_defaults():
    source = resolve_source("qwen3-vl-4b")
    assert source.hub_id == "Qwen/Qwen3-VL-4B-Instruct" and source.local_path is None
    assert source.family == "qwen3-vl" and source.dtype == "bfloat16"
    other = resolve_source("some-org/some-model")
    assert other.hub_id == "some-org/some-model" and other.family is None


def test_unknown_registry_name_lists_close_matches():
    with pytest.raises(UnknownNameError, match="unknown model 'tiny-qwen3vl'. Did you mean tiny-qwen3-vl"):
        load_model(ModelConfig(name="tiny-qwen3vl"))


def test_folder_without_a_model_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="is not a model directory: expected a folder with config.json"):
        load_model(ModelConfig(name=str(tmp_path)))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="model.safetensors is not a model directory"):
        load_model(ModelConfig(name=str(weights)))
    with pytest.raises(ModelLoadError, match="model directory ./no/such/model does not exist"):
        load_model(ModelConfig(name="./no/such/model"))


def test_hub_id_offline_and_not_cached(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="cannot download fgvlm-test/not-a-model offline.*pass a local directory"):
        load_model(ModelConfig(name="fgvlm-test/not-a-model"))
    # A preset names its hub id in the message (no preset checkpoint is in the hub cache on a test machine).
    with pytest.raises(ModelLoadError, match="cannot download Salesforce/instructblip-flan-t5-xl offline"):
        load_model(ModelConfig(name="instructblip-flan-t5-xl", revision="0123abc"))


def test_custom_code_needs_trust_remote_code(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "fancy-vlm", "auto_map": {"AutoConfig": "configuration_fancy.FancyConfig"}})
    )
    (tmp_path / "configuration_fancy.py").write_text("raise SystemExit('custom code ran')\n")
    with pytest.raises(ModelLoadError, match="needs its own Python code.*model.trust_remote_code=true"):
        load_model(ModelConfig(name=str(tmp_path)))


def test_errors_are_config_errors_for_the_cli():
    assert issubclass(ModelLoadError, ConfigError)


def test_qwen_pixel_bounds_reach_the_image_processor(tiny_model_dir):
    from PIL import Image

    image = Image.new("RGB", (500, 375), (200, 30, 90))
    path = str(tiny_model_dir("qwen3-vl"))

    def grid(**bounds) -> list[int]:
        _, processor, _ = load_model(ModelConfig(name=path, **bounds))
        return processor.image_processor(images=[image])["image_grid_thw"][0].tolist()

    # Sides round to multiples of 32 (patch 16 x merge 2). Default bound 96x96 px: scale 375x500 by
    # sqrt(187500 / 9216) = 4.51 and floor -> 64 x 96 px = 4 x 6 patches.
    assert grid() == [1, 4, 6]
    # max 128x128 px: factor sqrt(187500 / 16384) = 3.38 -> floor(3.46) x floor(4.62) -> 96 x 128 px.
    assert grid(max_pixels=128 * 128) == [1, 6, 8]
    # min 512x512 px: factor sqrt(262144 / 187500) = 1.18 -> ceil(13.86) x ceil(18.47) -> 448 x 608 px.
    assert grid(min_pixels=512 * 512, max_pixels=1024 * 1024) == [1, 28, 38]
    with pytest.raises(ModelLoadError, match="min_pixels .* exceeds model.max_pixels"):
        grid(min_pixels=1024 * 1024, max_pixels=64 * 64)


def test_pixel_bounds_and_bad_options_are_refused(tiny_model_dir):
    with pytest.raises(ModelLoadError, match="apply to qwen3-vl, qwen2.5-vl only, not idefics2"):
        load_model(ModelConfig(name=str(tiny_model_dir("idefics2")), max_pixels=4096))
    with pytest.raises(ModelLoadError, match="model.dtype must be one of float32, bfloat16, float16, got 'fp8'"):
        load_model(ModelConfig(name=str(tiny_model_dir("idefics2")), dtype="fp8"))
    with pytest.raises(UnknownNameError, match="unknown model family 'qwen3'"):
        load_model(ModelConfig(name=str(tiny_model_dir("idefics2")), family="qwen3"))


def test_dtype_device_and_family_override(tiny_model_dir):
    import torch

    model, _, info = load_model(ModelConfig(name=str(tiny_model_dir("smolvlm")), dtype="bfloat16", device="cpu"))
    assert next(model.parameters()).dtype == torch.bfloat16 and info["dtype"] == "bfloat16"
    assert info["device"] == "cpu"
    _, _, info = load_model(ModelConfig(name=str(tiny_model_dir("smolvlm")), family="idefics2"))
    assert info["family"] == "idefics2"  # the override wins over model_type


def test_instructblip_processor_keeps_its_chat_template(tiny_model_dir, tmp_path):
    import shutil

    turn = [{"role": "user", "content": [{"type": "text", "text": "Name it."}]}]
    _, processor, _ = load_model(ModelConfig(name=str(tiny_model_dir("instructblip"))))
    assert processor.apply_chat_template(turn) == "Name it."
    # Like the Salesforce checkpoints, a copy that ships no template at all gets the plain-instruction one.
    bare = shutil.copytree(tiny_model_dir("instructblip-t5"), tmp_path / "bare")
    (bare / "chat_template.jinja").unlink()
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    _, processor, _ = load_model(ModelConfig(name=str(bare)))
    assert processor.apply_chat_template(turn) == "Name it."


def test_load_backend_wraps_the_family_backend(tiny_model_dir, use_tiny_cache):
    from fgvlm.models.base import VLMBackend
    from fgvlm.models.loading import load_backend

    backend = load_backend(ModelConfig(name="tiny-qwen2.5-vl"))
    assert isinstance(backend, VLMBackend) and backend.family == "qwen2.5-vl"


@pytest.mark.parametrize(
    ("asked", "preset", "on_gpu", "expected"),
    [
        (None, None, False, "float32"),  # CPU: float32 whatever the checkpoint stores
        (None, "bfloat16", False, "float32"),
        (None, None, True, "auto"),  # GPU, hub id or folder without a preset: the checkpoint's own dtype
        (None, "bfloat16", True, "bfloat16"),  # GPU with a preset: the preset's
        ("float16", "bfloat16", True, "float16"),  # asked always wins
        ("bfloat16", None, False, "bfloat16"),
    ],
)
def test_dtype_choice(asked, preset, on_gpu, expected):
    assert choose_dtype(asked, preset, on_gpu) == expected


def test_family_override_is_checked_against_the_backend_table():
    from fgvlm.models.families import family_names

    for family in family_names():
        assert choose_family(ModelConfig(family=family), ModelSource("x"), None) == family
    with pytest.raises(UnknownNameError, match="unknown model family 'qwen3'"):
        choose_family(ModelConfig(family="qwen3"), ModelSource("x"), None)


@pytest.mark.parametrize("key", ["use_safetensors", "trust_remote_code", "revision"])
def test_model_extra_cannot_override_the_safety_defaults(tiny_model_dir, key):  # noqa: F811
    with pytest.raises(ModelLoadError, match=f"model.extra may not set {key}"):
        load_model(ModelConfig(name=str(tiny_model_dir("qwen3-vl")), extra={key: False}))
