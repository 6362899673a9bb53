"""Shared test fixtures: the real Flowers102 data beside the repo, offline hub settings, small tmp paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from models_fixtures import tiny_cache, tiny_model_dir, use_tiny_cache  # noqa: F401  (shared tiny-model fixtures)
from report_fixtures import report_study  # noqa: F401  (runs made by the real CLI, for report tests)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FLOWERS_MINI = SHARED_DATA / "flowers102-mini"
FLOWERS_META = SHARED_DATA / "flowers102-meta"


@pytest.fixture(scope="session")
def flowers_mini() -> Path:
    if not (FLOWERS_MINI / "setid.mat").is_file():
        pytest.skip(f"real Flowers102 mini set not found at {FLOWERS_MINI} (../shared/data beside the repo)")
    return FLOWERS_MINI


@pytest.fixture(scope="session")
def flowers_meta() -> Path:
    if not (FLOWERS_META / "setid.mat").is_file():
        pytest.skip(f"official Flowers102 metadata not found at {FLOWERS_META} (../shared/data beside the repo)")
    return FLOWERS_META
