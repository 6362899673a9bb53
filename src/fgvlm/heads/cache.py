"""The on-disk feature cache: ``<cache_dir>/features/<sha key>/{features.safetensors, meta.json}``.

The key hashes every ingredient that changes a feature: the backbone (fingerprint or hub id + revision, dtype),
the preprocessing (image processor settings, pixel bounds), the dataset (``dataset_identity``: name, protocol, root
or source, options; then the split and the exact ids in order), the prompt text, the pooling and the layer. Change
any of them and a new entry is made.

An entry is written into a private temp folder and renamed into place only once ``meta.json`` (the completion
marker, written last) is there, so a killed extraction never leaves a folder that reads as complete; of two
processes racing to write the same key, the loser discards its copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

FEATURES_FILE = "features.safetensors"
META_FILE = "meta.json"
CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$FGVLM_CACHE`` or ``~/.cache/fgvlm`` (shared with the tiny models and datasets)."""
    return Path(os.environ.get("FGVLM_CACHE") or "~/.cache/fgvlm").expanduser()


def ids_digest(ids: list[str]) -> str:
    """A digest of the split's ids in order: a different subset or order is a different entry."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


def feature_key(ingredients: dict[str, Any]) -> str:
    """The entry name: sha256 of the ingredients as canonical JSON."""
    text = json.dumps({"version": CACHE_VERSION, **ingredients}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class CachedFeatures:
    """One split's features ``[N, D]`` (float32), labels ``[N]`` and the entry's meta (ingredients, ids, timing)."""

    features: torch.Tensor
    labels: torch.Tensor
    meta: dict[str, Any]

    @property
    def ids(self) -> list[str]:
        return self.meta["ids"]


class FeatureCache:
    """Complete entries only: ``load`` returns None for a missing or half-written entry."""

    def __init__(self, root: str | Path | None = None):
        self.root = (Path(root).expanduser() if root else default_cache_dir()) / "features"

    def entry(self, key: str) -> Path:
        return self.root / key

    def has(self, key: str) -> bool:
        path = self.entry(key)
        return (path / META_FILE).is_file() and (path / FEATURES_FILE).is_file()

    def load(self, key: str) -> CachedFeatures | None:
        if not self.has(key):
            return None
        from safetensors.torch import load_file

        path = self.entry(key)
        meta = json.loads((path / META_FILE).read_text())
        tensors = load_file(path / FEATURES_FILE)
        return CachedFeatures(tensors["features"], tensors["labels"], meta)

    def save(self, key: str, features: torch.Tensor, labels: torch.Tensor, meta: dict[str, Any]) -> Path:
        """Write an entry atomically (temp folder, meta last, rename); an existing complete entry is kept."""
        from safetensors.torch import save_file

        final = self.entry(key)
        if self.has(key):
            return final
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{key}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
        try:
            save_file(
                {"features": features.detach().float().cpu().contiguous(), "labels": labels.long().cpu()},
                str(tmp / FEATURES_FILE),
                metadata={"key": key},
            )
            (tmp / META_FILE).write_text(json.dumps({"key": key, **meta}, indent=2, default=str) + "\n")
            if final.exists():  # a stale half-written entry (no meta) from an older, killed writer
                shutil.rmtree(final, ignore_errors=True)
            try:
                os.rename(tmp, final)
            except OSError:  # another process finished the same key first: keep theirs
                if not self.has(key):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final
