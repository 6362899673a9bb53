"""Every shipped YAML under configs/ loads into its command's config dataclass (no unknown keys, valid values)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgvlm.config import resolve_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STUDIES = CONFIGS / "studies"  # study files are checked by tests/test_study.py


def config_class(folder: str) -> type:
    if folder == "cnn":
        from fgvlm.train.cnn_config import CNNTrainConfig

        return CNNTrainConfig
    if folder == "heads":
        from fgvlm.heads.config import HeadTrainConfig

        return HeadTrainConfig
    if folder == "eval":
        from fgvlm.eval.zeroshot import EvalConfig

        return EvalConfig
    raise AssertionError(f"configs/{folder}/ has no config class: add it to this test")


@pytest.mark.parametrize("path", sorted(set(CONFIGS.rglob("*.yaml")) - set(STUDIES.glob("*.yaml"))), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_loads(path):
    cfg = resolve_config(config_class(path.parent.name), path)
    assert cfg.data.dataset in {"flowers102", "synthflowers"}
    if cfg.data.dataset == "flowers102":
        assert cfg.data.protocol in {"official", "trainval", "swapped"}


def test_every_config_folder_is_covered():
    assert {p.parent.name for p in CONFIGS.rglob("*.yaml")} == {"cnn", "heads", "eval", "studies"}
