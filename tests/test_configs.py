"""Every shipped YAML under configs/<folder>/ loads into the config class of its kind (``fgvlm.kinds.KINDS``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fgvlm.config import resolve_config
from fgvlm.kinds import KINDS, TOOL_CONFIG_FOLDERS, kind_config_class, kind_for_configs_folder

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STUDIES = "studies"  # study files, checked by tests/test_study.py
FGVLM_CONFIGS = sorted(p for p in CONFIGS.rglob("*.yaml") if p.parent.name not in (*TOOL_CONFIG_FOLDERS, STUDIES))


@pytest.mark.parametrize("path", FGVLM_CONFIGS, ids=lambda p: str(p.relative_to(CONFIGS)))
def test_shipped_config_loads_into_its_kind(path):
    kind = kind_for_configs_folder(path.parent.name)
    cfg = resolve_config(kind_config_class(kind.name), path)
    assert cfg.data.dataset in {"flowers102", "synthflowers"}
    if cfg.data.dataset == "flowers102":
        assert cfg.data.protocol in {"official", "trainval", "swapped"}


def test_every_config_folder_belongs_to_a_kind():
    folders = {p.parent.name for p in CONFIGS.rglob("*.yaml")}
    assert folders <= {kind.configs for kind in KINDS.values()} | {*TOOL_CONFIG_FOLDERS, STUDIES}
    assert all(p.parent.parent == CONFIGS for p in CONFIGS.rglob("*.yaml"))  # one level: configs/<folder>/x.yaml
