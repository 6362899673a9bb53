"""Datasets: one interface (``Dataset``/``Split``/``Sample``) and one module per source."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fgvlm.data.base import BadImageError, Dataset, DatasetError, Record, Sample, Split

if TYPE_CHECKING:
    from fgvlm.config import DataConfig

__all__ = ["BadImageError", "Dataset", "DatasetError", "Record", "Sample", "Split", "create_dataset"]


def create_dataset(cfg: DataConfig | None = None, **kwargs: Any) -> Dataset:
    """The one way in: a ``DataConfig`` (or its fields as keywords) -> an opened dataset."""
    from fgvlm.config import DataConfig
    from fgvlm.registry import dataset_class

    cfg = cfg or DataConfig(**kwargs)
    cls = dataset_class(cfg.dataset)
    return cls(root=cfg.root, protocol=cfg.protocol, on_bad_image=cfg.on_bad_image, **cfg.options)
