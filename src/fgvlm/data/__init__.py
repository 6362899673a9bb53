"""Datasets: one interface (``Dataset``/``Split``/``Sample``) and one module per source."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from fgvlm.data.base import BadImageError, Dataset, DatasetError, Record, Sample, Split

if TYPE_CHECKING:
    from fgvlm.config import DataConfig

_COMMON_ARGS = ("self", "root", "protocol", "on_bad_image")

__all__ = ["BadImageError", "Dataset", "DatasetError", "Record", "Sample", "Split", "create_dataset"]


def create_dataset(cfg: DataConfig | None = None, **kwargs: Any) -> Dataset:
    """The one way in: a ``DataConfig`` (or its fields as keywords) -> an opened dataset, with the shared protocol
    choices (split file, k-shot, class subset) applied, so every command that builds a dataset gets them."""
    from fgvlm.config import DataConfig
    from fgvlm.registry import dataset_class

    cfg = cfg or DataConfig(**kwargs)
    cls = dataset_class(cfg.dataset)
    known = [p for p in inspect.signature(cls.__init__).parameters if p not in _COMMON_ARGS]
    unknown = sorted(set(cfg.options) - set(known))
    if unknown:
        raise DatasetError(f"{cfg.dataset}: unknown option(s) {', '.join(unknown)}; known options: {', '.join(known)}")
    dataset = cls(root=cfg.root, protocol=cfg.protocol, on_bad_image=cfg.on_bad_image, **cfg.options)
    return dataset.select(cfg.shots, cfg.shot_seed, cfg.classes, cfg.split_file)
