"""Configs: YAML < flags < --set, unknown keys named with their file, types checked."""

from __future__ import annotations

import dataclasses

import pytest

from fgvlm.config import ConfigError, DataConfig, parse_override, resolve_config, to_dict


@dataclasses.dataclass
class Train:
    lr: float = 1e-4
    steps: int = 2000
    name: str = "head"
    layers: list[int] = dataclasses.field(default_factory=lambda: [-1])


@dataclasses.dataclass
class Job:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: Train = dataclasses.field(default_factory=Train)
    seed: int = 0


def test_defaults_yaml_flags_and_overrides_merge_in_order(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("data:\n  dataset: flowers102\n  protocol: swapped\ntrain:\n  lr: 0.001\n  steps: 10\nseed: 3\n")
    cfg = resolve_config(Job, path, flags={"train.steps": 20, "seed": None}, overrides=["train.lr=1e-5", "seed=7"])
    assert cfg.data.dataset == "flowers102" and cfg.data.protocol == "swapped"
    assert cfg.data.on_bad_image == "error"  # default kept
    assert cfg.train.steps == 20  # flag beats YAML
    assert cfg.train.lr == pytest.approx(1e-5) and isinstance(cfg.train.lr, float)  # --set wins; "1e-5" is a float
    assert cfg.seed == 7
    assert to_dict(cfg)["train"] == {"lr": 1e-5, "steps": 20, "name": "head", "layers": [-1]}


def test_unknown_key_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  lr: 0.1\n  stpes: 5\n")
    with pytest.raises(ConfigError) as err:
        resolve_config(Job, path)
    assert "stpes" in str(err.value) and str(path) in str(err.value)


def test_unknown_override_key_and_wrong_type_are_named():
    with pytest.raises(ConfigError, match="trian"):
        resolve_config(Job, overrides=["trian.lr=1"])
    with pytest.raises(ConfigError, match=r"train\.steps.*expected int"):
        resolve_config(Job, overrides=["train.steps=many"])
    with pytest.raises(ConfigError, match="on_bad_image"):
        resolve_config(Job, overrides=["data.on_bad_image=ignore"])


def test_override_values_are_yaml():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("x=true") == (["x"], True)
    assert parse_override("x=") == (["x"], "")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("novalue")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        resolve_config(Job, tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        resolve_config(Job, bad)
