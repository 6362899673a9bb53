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


def require_shared(marker: Path, what: str) -> None:
    """A missing ``../shared/data`` folder fails the test when ``CI`` is set (a CI run must never pass by skipping
    what it was meant to check) and skips it, with the reason, on a developer's machine without the data."""
    if marker.is_file():
        return
    reason = f"{what} not found at {marker.parent} (../shared/data beside the repo)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI is set, so missing shared data is an error", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def flowers_mini() -> Path:
    require_shared(FLOWERS_MINI / "setid.mat", "real Flowers102 mini set")
    return FLOWERS_MINI


@pytest.fixture(scope="session")
def flowers_meta() -> Path:
    require_shared(FLOWERS_META / "setid.mat", "official Flowers102 metadata")
    return FLOWERS_META
