"""What a dataset is made of, below everything else in ``fgvlm.data``: records, samples and the two errors."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image


class BadImageError(ValueError):
    """An image file that cannot be decoded; the message names the dataset and the file."""


class DatasetError(ValueError):
    """A dataset that cannot be opened as asked (missing files, wrong protocol, bad options)."""


@dataclass(frozen=True)
class Record:
    """One item without its pixels: a stable id, a 0-based label and where the image comes from."""

    id: str
    label: int
    path: Path | None = None


@dataclass(frozen=True)
class Sample:
    id: str
    label: int
    image: Image.Image
