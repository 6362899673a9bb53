"""The shipped ``configs/accelerate/*.yaml`` load through accelerate's own code, so a typo fails here, not on a cluster.

accelerate checks only the top-level keys of a config file (``ClusterConfig.from_yaml_file``); keys inside
``fsdp_config`` / ``deepspeed_config`` that it does not know are silently ignored by ``accelerate launch``. So each
nested key is also checked against the launcher's own arguments, and the values go through the launcher's argument
handling into the FSDP and DeepSpeed plugin classes, which validate them.
"""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "accelerate"
EXPECTED = {
    "ddp": "MULTI_GPU",
    "fsdp-full-shard": "FSDP",
    "deepspeed-zero2": "DEEPSPEED",
    "deepspeed-zero3": "DEEPSPEED",
}


def launcher_options() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return {action.dest for action in launch_command_parser()._actions}


def unknown_nested_keys(config) -> list[str]:
    """Keys of ``fsdp_config``/``deepspeed_config`` that ``accelerate launch`` would ignore (mapped as it maps them)."""
    options = launcher_options()
    keys = [k if k.startswith("fsdp_") else f"fsdp_{k}" for k in config.fsdp_config]
    keys += list(config.deepspeed_config)
    return [key for key in keys if key not in options]


def launch_args(path: Path):
    """The launcher's namespace after it merged the config file in (what ``accelerate launch`` would run with)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    return _validate_launch_command(args)[0]


def load_checked(path: Path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))  # raises on unknown top-level keys
    unknown = unknown_nested_keys(config)
    if unknown:
        raise ValueError(f"{path.name}: accelerate launch does not know {unknown}")
    return config


def test_every_shipped_config_is_covered() -> None:
    assert {p.stem for p in CONFIGS.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_accelerate(name: str) -> None:
    config = load_checked(CONFIGS / f"{name}.yaml")
    assert config.distributed_type.value == EXPECTED[name]
    assert config.compute_environment.value == "LOCAL_MACHINE"
    args = launch_args(CONFIGS / f"{name}.yaml")
    assert args.num_processes == config.num_processes > 1


def test_fsdp_config_builds_the_plugin_and_wraps_qwen3_vl_layers(tiny_model_dir) -> None:
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.dataclasses import get_module_class_from_name
    from accelerate.utils.launch import prepare_multi_gpu_env
    from transformers import AutoModelForImageTextToText

    env = prepare_multi_gpu_env(launch_args(CONFIGS / "fsdp-full-shard.yaml"))
    fsdp_env = {k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_"))}
    with mock.patch.dict(os.environ, fsdp_env):
        plugin = FullyShardedDataParallelPlugin()  # validates every value the launcher passes on
    assert plugin.fsdp_version == 2 and plugin.reshard_after_forward is True  # full shard
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # RUN/model is saved as a plain checkpoint
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir("qwen3-vl"))
    for class_name in plugin.transformer_cls_names_to_wrap:  # accelerate refuses names it cannot find in the model
        assert get_module_class_from_name(model, class_name) is not None, class_name
    assert set(plugin.transformer_cls_names_to_wrap) == set(model._no_split_modules)


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_config_builds_the_plugin(stage: int) -> None:
    from accelerate.utils import DeepSpeedPlugin

    config = load_checked(CONFIGS / f"deepspeed-zero{stage}.yaml")
    json_path = config.deepspeed_config["deepspeed_config_file"]
    assert (REPO / json_path).is_file(), f"{json_path} (relative to the repo root, where accelerate launch runs)"
    plugin = DeepSpeedPlugin(hf_ds_config=str(REPO / json_path))
    assert plugin.zero_stage == stage
    assert plugin.hf_ds_config.config["train_micro_batch_size_per_gpu"] == "auto"  # filled by the Trainer
    assert config.deepspeed_config["zero3_init_flag"] is (stage == 3)


def test_a_misspelled_key_fails(tmp_path: Path) -> None:
    text = (CONFIGS / "fsdp-full-shard.yaml").read_text()
    nested = tmp_path / "nested.yaml"
    nested.write_text(text.replace("fsdp_auto_wrap_policy", "fsdp_auto_wrap_polcy"))
    with pytest.raises(ValueError, match="fsdp_auto_wrap_polcy"):
        load_checked(nested)
    top = tmp_path / "top.yaml"
    top.write_text(text.replace("mixed_precision", "mixed_precison"))
    with pytest.raises(ValueError, match="mixed_precison"):
        load_checked(top)
