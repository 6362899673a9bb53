"""The one dataset interface: items with an image, an integer label and a stable id; class names; splits.

A dataset lists its records (id, label, file) cheaply; pixels are read only when a sample is asked for. Bad images
(corrupt, truncated, not an image) raise ``BadImageError`` naming the file and the dataset, or, with
``on_bad_image="skip"``, are found by a decoding pass when a split is first opened, left out, and counted in
``Dataset.skipped`` (which every result's ``meta.json`` records).
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

from PIL import Image

from fgvlm.data.protocols import (
    SPLIT_FILE_PROTOCOLS,
    class_subset,
    keep_classes,
    select_shots,
    sha256_file,
    split_file_path,
    split_file_records,
)
from fgvlm.data.records import BadImageError, DatasetError, Record, Sample

SPLITS = ("train", "val", "test")
__all__ = ["SPLITS", "BadImageError", "Dataset", "DatasetError", "Record", "Sample", "Split", "dataset_identity"]


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
    """Base class: subclasses set ``class_names`` and implement ``list_records``; the rest is shared.

    What fgvlm knows about a dataset lives on its class: the word prompts use for what is shown (``object_word``),
    the question a head pools over (``head_prompt``), the head words too general to name a second class
    (``ignored_head_words``), whether it needs no files at all (``offline``), how to fetch it (``download``) and,
    for the CoOp protocol, the name of CoOp's split file and its published sizes. The protocols every file-backed
    dataset shares (``coop``, ``split-file``, k-shot, base-to-new; ``fgvlm.data.protocols``) are applied here, after
    ``list_records``, so every command that opens a split sees them.
    """

    name: str = "dataset"
    protocols: tuple[str, ...] = ("official",)
    """The dataset's own protocols (``list_records`` serves them); ``coop``/``split-file`` come on top."""
    protocol_docs: dict[str, str] = {}
    object_word: str = "object"
    """What ``{object}`` stands for in prompts ("flower", "bird species")."""
    offline: bool = False
    """True for a dataset drawn without any file or download (the demo): a tiny random model is a fair default."""
    file_backed: bool = True
    """Records are image files under ``image_folder()``: split files can name them."""
    coop_split_file: str | None = None
    """CoOp's split file for this dataset (looked for in ``dataset_folder()``), if CoOp published one."""
    coop_sizes: dict[str, int] | None = None
    """The CoOp split's published train/val/test sizes, asserted when a complete file is read."""
    download_help: str = "fgvlm cannot download it; place its files under --root in the layout the docs describe."
    downloadable: bool = False
    """``download`` fetches the files (else it raises ``download_help``)."""
    files_from: str = "local files"
    """Where the data comes from when fgvlm does not download it (``fgvlm list datasets``)."""
    citation: str = ""
    """BibTeX of the dataset's paper (the cards of published models and instruction data cite it); "" if none."""

    def __init__(self, root: str | Path | None = None, protocol: str = "official", on_bad_image: str = "error"):
        available = self.available_protocols()
        if protocol not in available:
            raise DatasetError(f"{self.name}: unknown protocol {protocol!r}; choose one of {', '.join(available)}")
        self.root = Path(root).expanduser() if root is not None else None
        self.protocol = protocol
        self.on_bad_image = on_bad_image
        self._class_names: list[str] = []
        self.skipped: list[dict[str, str]] = []
        self._splits: dict[str, Split] = {}
        self.shots: int | None = None
        self.shot_seed: int | None = None
        self.classes = "all"
        self.kept_labels: list[int] | None = None
        """Original labels of the class subset (``classes`` base or new), in their new order; None for all."""
        self.split_file: Path | None = None

    @classmethod
    def available_protocols(cls) -> tuple[str, ...]:
        """The dataset's own protocols, then ``coop`` (when CoOp published a file for it) and ``split-file``."""
        extra = (("coop",) if cls.coop_split_file and "coop" not in cls.protocols else ()) + (
            ("split-file",) if cls.file_backed else ()
        )
        return tuple(cls.protocols) + extra

    @property
    def own_protocol(self) -> str:
        """The protocol ``list_records`` serves: the chosen one, or the first own one under a split file."""
        return self.protocol if self.protocol in self.protocols else self.protocols[0]

    # -- what subclasses provide ---------------------------------------------------------------------------
    def list_records(self) -> dict[str, list[Record]]:
        """All splits of ``own_protocol``: name -> records in a fixed order, labels over all classes."""
        raise NotImplementedError

    def open_image(self, record: Record) -> Image.Image:
        """Pixels of one record (with its original label) as RGB; file-backed datasets need not override this."""
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

    def dataset_folder(self) -> Path:
        """The folder holding the dataset's files (where CoOp's split file goes)."""
        if self.root is None:
            raise DatasetError(f"{self.name}: no root given; set --root (data.root)")
        return self.root

    def image_folder(self) -> Path:
        """The folder split-file paths are relative to."""
        return self.dataset_folder()

    @classmethod
    def download(cls, root: str | Path | None = None, base_url: str | None = None, *, progress: bool = True) -> dict:
        """Fetch the dataset's files into ``root``; returns what was done. Datasets without a download say why."""
        raise DatasetError(f"{cls.name}: {cls.download_help}")

    @property
    def head_prompt(self) -> str:
        """The question shown with the image when a head pools the backbone's features."""
        return f"What is the name of the {self.object_word} in this image?"

    @property
    def ignored_head_words(self) -> tuple[str, ...]:
        """Head words too general to signal a second class in an answer (the object word's own words)."""
        return tuple(self.object_word.split())

    # -- classes: a subset (base/new) shows only its classes, relabelled from 0 ----------------------------------
    @property
    def class_names(self) -> list[str]:
        names = self._class_names
        return list(names) if self.kept_labels is None else [names[label] for label in self.kept_labels]

    @class_names.setter
    def class_names(self, names: list[str]) -> None:
        self._class_names = list(names)

    @property
    def all_class_names(self) -> list[str]:
        """Every class of the dataset, whatever subset is chosen."""
        return list(self._class_names)

    @contextlib.contextmanager
    def every_class(self) -> Iterator[None]:
        """Within this block the dataset shows all its classes (listing records, mapping split-file names)."""
        kept, self.kept_labels = self.kept_labels, None
        try:
            yield
        finally:
            self.kept_labels = kept

    def select(
        self, shots: int | None = None, shot_seed: int = 1, classes: str = "all", split_file: str | Path | None = None
    ) -> Dataset:
        """Apply the shared protocol choices (``create_dataset`` calls this with a checked ``DataConfig``)."""
        self.kept_labels = class_subset(len(self._class_names), classes)
        self.shots, self.shot_seed, self.classes = shots, shot_seed if shots is not None else None, classes
        self.split_file = Path(split_file).expanduser() if split_file is not None else None
        return self

    # -- shared behaviour -----------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def split_names(self) -> list[str]:
        return [s for s in SPLITS if s in self._all_records()]

    def _all_records(self) -> dict[str, list[Record]]:
        if not hasattr(self, "_records"):
            with self.every_class():
                if self.protocol in SPLIT_FILE_PROTOCOLS and self.protocol not in self.protocols:
                    records = split_file_records(self)
                else:
                    records = self.list_records()
            if self.shots is not None:
                records = select_shots(records, self.shots, self.shot_seed)
            if self.kept_labels is not None:
                records = keep_classes(records, self.kept_labels)
            self._records = records
        return self._records

    def load_image(self, record: Record) -> Image.Image:
        """Pixels of a record as the splits hold it (a subset's labels are mapped back for ``open_image``)."""
        if self.kept_labels is not None:
            record = dataclasses.replace(record, label=self.kept_labels[record.label])
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
                self.load_image(record)
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

    def class_counts(self, split: str) -> dict[str, int]:
        """Images per class of one split, by class name, in label order (classes without images count 0)."""
        counts = [0] * self.num_classes
        for record in self._all_records()[split]:
            counts[record.label] += 1
        return dict(zip(self.class_names, counts, strict=True))

    def per_class_counts(self, split: str) -> dict[str, int]:
        counts = {"min": 0, "median": 0, "max": 0}
        per = list(self.class_counts(split).values())
        if self._all_records()[split]:
            counts = {"min": min(per), "median": statistics.median(per), "max": max(per)}
        return counts

    def protocol_description(self) -> str:
        """The chosen protocol in a sentence: the dataset's own words, else the shared protocol's."""
        shared = {"split-file": f"The CoOp-format split file {self.split_file} laid over the dataset's own images."}
        return self.protocol_docs.get(self.protocol) or shared.get(self.protocol, "")

    def protocol_header(self) -> dict[str, Any]:
        """The protocol entries of every results header: protocol, shots, shot seed and class subset."""
        return {"protocol": self.protocol, "shots": self.shots, "shot_seed": self.shot_seed, "classes": self.classes}

    def protocol_label(self) -> str:
        """The protocol in one short phrase, e.g. 'coop, 4-shot (seed 1), base classes'."""
        parts = [self.protocol]
        if self.shots is not None:
            parts.append(f"{self.shots}-shot (seed {self.shot_seed})")
        if self.classes != "all":
            parts.append(f"{self.classes} classes")
        return ", ".join(parts)

    def describe(self) -> dict[str, Any]:
        """What a result needs to say about its data (``meta.json``'s ``dataset`` entry).

        With k-shot, ``selected_ids`` lists the chosen train and val ids (in Dassl's order); with a class subset,
        ``class_labels`` lists the original labels kept; with a split file, its path and content hash.
        """
        out = {
            "dataset": self.name,
            "protocol": self.protocol,
            "protocol_description": self.protocol_description(),
            "root": str(self.root) if self.root else None,
            "num_classes": self.num_classes,
            "splits": self.split_sizes(),
            "on_bad_image": self.on_bad_image,
            "skipped_images": len(self.skipped),
            "skipped": self.skipped,
            "shots": self.shots,
            "shot_seed": self.shot_seed,
            "classes": self.classes,
        }
        if self.kept_labels is not None:
            out["class_labels"] = list(self.kept_labels)
        if self.shots is not None:
            records = self._all_records()
            out["selected_ids"] = {s: [r.id for r in records[s]] for s in ("train", "val") if s in records}
        if self.protocol in ("coop", "split-file") and self.protocol not in self.protocols:
            path = split_file_path(self)
            out["split_file"] = str(path)
            if path.is_file():
                out["split_file_sha256"] = sha256_file(path)
        return out


NOT_IDENTITY = ("splits", "skipped", "skipped_images", "shots", "shot_seed", "selected_ids")
"""``Dataset.describe()`` entries that are counts or lists derived from the records, not what the pixels and labels
come from: the k-shot draw only picks ids, and cache keys hold each split's ids on their own (so a 4-shot run and a
full run share the test split's cached features)."""
DEFAULT_SELECTION = {"classes": "all"}
"""Protocol choices left out of an identity at their defaults, so cache keys written before they existed still hold."""


def dataset_identity(dataset: Dataset) -> dict[str, Any]:
    """Where a dataset's images and labels come from, for cache keys: its ``describe()`` (name, protocol, root or
    source, and each dataset's own options) without the derived split sizes and skip lists. Two image folders with
    the same file names under different roots, or two hub datasets of the same size, get different identities."""
    return {
        k: v
        for k, v in dataset.describe().items()
        if k not in NOT_IDENTITY and not (k in DEFAULT_SELECTION and DEFAULT_SELECTION[k] == v)
    }
