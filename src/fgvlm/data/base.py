"""The one dataset interface: items with an image, an integer label and a stable id; class names; splits.

A dataset lists its records (id, label, file) cheaply; pixels are read only when a sample is asked for. Bad images
(corrupt, truncated, not an image) raise ``BadImageError`` naming the file and the dataset, or, with
``on_bad_image="skip"``, are found by a decoding pass when a split is first opened, left out, and counted in
``Dataset.skipped`` (which every result's ``meta.json`` records).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from PIL import Image

SPLITS = ("train", "val", "test")


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


def load_rgb(path: Path, dataset: str) -> Image.Image:
    """Decode an image fully (so truncation shows up here, not later in a worker) and convert it to RGB."""
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except FileNotFoundError:
        raise BadImageError(f"{dataset}: image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise BadImageError(f"{dataset}: cannot read image {path}: {err}") from None


class Split(Sequence[Sample]):
    """The samples of one split, in a fixed order; ``records`` gives ids and labels without decoding.

    A full ``Sequence``: ``split[i]`` decodes one sample, ``split[a:b:c]`` is a ``Split`` of the same dataset and
    name holding the sliced records (nothing decoded), so ``ids``, ``labels`` and cache keys follow the slice.
    """

    def __init__(self, dataset: Dataset, name: str, records: list[Record]):
        self.dataset = dataset
        self.name = name
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> Split: ...

    def __getitem__(self, index: int | slice) -> Sample | Split:
        if isinstance(index, slice):
            return Split(self.dataset, self.name, self.records[index])
        record = self.records[index]
        return Sample(record.id, record.label, self.dataset.load_image(record))

    def __repr__(self) -> str:
        return f"Split({self.dataset.name!r}, {self.name!r}, {len(self)} samples)"

    def __iter__(self) -> Iterator[Sample]:
        for index in range(len(self)):
            yield self[index]

    @property
    def labels(self) -> list[int]:
        return [r.label for r in self.records]

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.records]


class Dataset:
    """Base class: subclasses set ``class_names`` and implement ``list_records``; the rest is shared."""

    name: str = "dataset"
    protocols: tuple[str, ...] = ("official",)
    protocol_docs: dict[str, str] = {}
    citation: str = ""
    """BibTeX of the dataset's paper (the cards of published models and instruction data cite it); "" if none."""

    def __init__(self, root: str | Path | None = None, protocol: str = "official", on_bad_image: str = "error"):
        if protocol not in self.protocols:
            raise DatasetError(f"{self.name}: unknown protocol {protocol!r}; choose one of {', '.join(self.protocols)}")
        self.root = Path(root).expanduser() if root is not None else None
        self.protocol = protocol
        self.on_bad_image = on_bad_image
        self.class_names: list[str] = []
        self.skipped: list[dict[str, str]] = []
        self._splits: dict[str, Split] = {}

    # -- what subclasses provide ---------------------------------------------------------------------------
    def list_records(self) -> dict[str, list[Record]]:
        """All splits of the chosen protocol: name -> records in a fixed order."""
        raise NotImplementedError

    def open_image(self, record: Record) -> Image.Image:
        """Pixels of one record as RGB; file-backed datasets need not override this."""
        if record.path is None:
            raise DatasetError(f"{self.name}: record {record.id} has no file and the dataset does not draw it")
        return load_rgb(record.path, self.name)

    @property
    def prompt_names(self) -> list[str]:
        """Class names as shown in prompts and ranked as answers (flowers102 shows 'lotus lotus' as 'lotus')."""
        return self.class_names

    @property
    def aliases(self) -> dict[int, list[str]]:
        """Extra accepted names per label (common and botanical synonyms); used by lenient matching."""
        return {}

    # -- shared behaviour -----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def split_names(self) -> list[str]:
        return [s for s in SPLITS if s in self._all_records()]

    def _all_records(self) -> dict[str, list[Record]]:
        if not hasattr(self, "_records"):
            self._records = self.list_records()
        return self._records

    def load_image(self, record: Record) -> Image.Image:
        return self.open_image(record)

    def split(self, name: str) -> Split:
        records = self._all_records()
        if name not in records:
            raise DatasetError(
                f"{self.name} ({self.protocol}): no split {name!r}; this protocol has {', '.join(records)}"
            )
        if name not in self._splits:
            kept = records[name]
            if self.on_bad_image == "skip":
                kept = self._drop_bad(name, kept)
            self._splits[name] = Split(self, name, kept)
        return self._splits[name]

    def _drop_bad(self, split: str, records: list[Record]) -> list[Record]:
        kept = []
        for record in records:
            try:
                self.open_image(record)
                kept.append(record)
            except BadImageError as err:
                entry = {"split": split, "id": record.id, "error": str(err)}
                if record.path is not None:
                    entry["path"] = str(record.path)
                self.skipped.append(entry)
        return kept

    def split_sizes(self) -> dict[str, int]:
        """Images per split (after skipping bad images, for splits already opened)."""
        return {
            name: len(self._splits[name]) if name in self._splits else len(records)
            for name, records in self._all_records().items()
        }

    def per_class_counts(self, split: str) -> dict[str, int]:
        counts = {"min": 0, "median": 0, "max": 0}
        labels = [r.label for r in self._all_records()[split]]
        if labels:
            per = [labels.count(c) for c in range(self.num_classes)]
            counts = {"min": min(per), "median": statistics.median(per), "max": max(per)}
        return counts

    def describe(self) -> dict[str, Any]:
        """What a result needs to say about its data (``meta.json``'s ``dataset`` entry)."""
        return {
            "dataset": self.name,
            "protocol": self.protocol,
            "protocol_description": self.protocol_docs.get(self.protocol, ""),
            "root": str(self.root) if self.root else None,
            "num_classes": self.num_classes,
            "splits": self.split_sizes(),
            "on_bad_image": self.on_bad_image,
            "skipped_images": len(self.skipped),
            "skipped": self.skipped,
        }


NOT_IDENTITY = ("splits", "skipped", "skipped_images")
"""``Dataset.describe()`` entries that are counts or lists derived from the records, not what the pixels come from."""


def dataset_identity(dataset: Dataset) -> dict[str, Any]:
    """Where a dataset's images and labels come from, for cache keys: its ``describe()`` (name, protocol, root or
    source, and each dataset's own options) without the derived split sizes and skip lists. Two image folders with
    the same file names under different roots, or two hub datasets of the same size, get different identities."""
    return {k: v for k, v in dataset.describe().items() if k not in NOT_IDENTITY}
