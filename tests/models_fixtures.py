"""Session fixtures for tiny models: each family is built once per test session, into a session cache folder.

Import them in ``conftest.py`` (``from models_fixtures import tiny_cache, tiny_model_dir, use_tiny_cache``).
``tiny_model_dir(family)`` is the built folder; with ``use_tiny_cache`` active, registry names (``tiny-qwen3-vl``)
resolve to the same folders instead of building into ``~/.cache/fgvlm``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A per-session ``$FGVLM_CACHE`` folder (models land in its ``models/``)."""
    return tmp_path_factory.mktemp("fgvlm-cache")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_cache: Path) -> Callable[[str], Path]:
    """``tiny_model_dir("qwen3-vl")`` -> the folder of registry model ``tiny-qwen3-vl``, built on first request."""
    from fgvlm.models.tiny import cached_tiny_model

    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("FGVLM_CACHE", str(tiny_cache))
                built[family] = cached_tiny_model(f"tiny-{family}", family)
        return built[family]

    return get


@pytest.fixture
def use_tiny_cache(monkeypatch: pytest.MonkeyPatch, tiny_cache: Path) -> Path:
    """Point ``$FGVLM_CACHE`` at the session cache for one test, so registry names reuse the session's builds."""
    monkeypatch.setenv("FGVLM_CACHE", str(tiny_cache))
    return tiny_cache


def synth_flower_images(count: int = 3, size: int = 160) -> list:
    """``count`` SynthFlowers images of different classes (drawn, no files): the numerical backend tests' inputs."""
    import numpy as np

    from fgvlm.data.synthflowers import class_table, draw_flower

    classes = class_table()
    return [draw_flower(classes[7 * i], np.random.default_rng(i), size) for i in range(count)]
