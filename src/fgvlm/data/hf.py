"""HFDataset: a Hugging Face ``datasets`` dataset -- a hub id, a folder saved with ``save_to_disk``, or a plain folder.

The source is ``root`` (or the option ``path``): a folder holding ``dataset_dict.json`` or ``state.json`` is read
with ``datasets.load_from_disk`` (a single saved split counts as train); anything else goes to
``datasets.load_dataset`` (a hub id, or a local folder such as ``root/<split>/<class>/<image>``, which ``datasets``
reads with its ``imagefolder`` builder). Hub ids need the network or a filled cache; offline, the error says so.

Options: ``image_column`` ("image"), ``label_column`` ("label"), ``splits`` (our train/val/test -> the dataset's split
names; default train, validation/val/valid and test where present), ``class_names`` (default: the label column's
``ClassLabel`` names; string labels are sorted into classes; integer labels without ``ClassLabel`` need this option),
``config_name`` (the hub configuration), ``cache_dir``.

Records are ``<source split>:<row>`` with no file; pixels are decoded from the row on demand, fully and to RGB, so a
broken image raises ``BadImageError`` naming the dataset and the row (or is skipped with ``on_bad_image="skip"``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from fgvlm.data.base import SPLITS, BadImageError, Dataset, DatasetError, Record

DEFAULT_SPLIT_NAMES = {"train": ("train",), "val": ("validation", "val", "valid"), "test": ("test",)}


def load_source(source: str, config_name: str | None, cache_dir: str | None) -> dict[str, Any]:
    """Open ``source`` as ``{split name: datasets.Dataset}`` with ``load_from_disk`` or ``load_dataset``."""
    import datasets

    local = Path(source).expanduser()
    try:
        if (local / "dataset_dict.json").is_file() or (local / "state.json").is_file():
            loaded = datasets.load_from_disk(str(local))
        else:
            loaded = datasets.load_dataset(str(local) if local.exists() else source, config_name, cache_dir=cache_dir)
    except (OSError, ValueError) as err:  # offline ConnectionError and DatasetNotFoundError are OSErrors
        raise DatasetError(f"hf: cannot load {source!r}: {err}") from None
    if isinstance(loaded, datasets.Dataset):
        return {"train": loaded}
    return dict(loaded)


def choose_splits(available: Sequence[str], requested: Mapping[str, str] | None, source: str) -> dict[str, str]:
    """Our split name -> the dataset's split name, from the option or the usual names."""
    if requested is None:
        chosen = {}
        for ours, candidates in DEFAULT_SPLIT_NAMES.items():
            match = next((name for name in candidates if name in available), None)
            if match is not None:
                chosen[ours] = match
        if not chosen:
            raise DatasetError(
                f"hf ({source}): none of the splits {list(available)} is called train, validation or "
                "test; map them with the option splits={train: ..., test: ...}"
            )
        return chosen
    if not isinstance(requested, Mapping):
        raise DatasetError(f"hf ({source}): option splits must map train/val/test to split names, got {requested!r}")
    unknown = sorted(set(requested) - set(SPLITS))
    missing = sorted(name for name in requested.values() if name not in available)
    if unknown or missing:
        raise DatasetError(
            f"hf ({source}): bad splits option {dict(requested)}: "
            + (f"keys {unknown} are not train/val/test; " if unknown else "")
            + (f"{missing} not among the dataset's splits {list(available)}" if missing else "")
        )
    if len(set(requested.values())) != len(requested):
        raise DatasetError(f"hf ({source}): splits option {dict(requested)} uses one split twice")
    return {ours: requested[ours] for ours in SPLITS if ours in requested}


def decode_image(value: Any) -> Image.Image:
    """One cell of an image column (``{"bytes", "path"}``, a path, or a PIL image) -> a fully decoded RGB image."""
    if isinstance(value, Image.Image):
        value.load()
        return value.convert("RGB")
    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
        if data is None and path is None:
            raise ValueError("the cell holds neither bytes nor a path")
        source = io.BytesIO(data) if data is not None else path
    elif isinstance(value, (str, Path)):
        source = value
    else:
        raise ValueError(f"unexpected cell of type {type(value).__name__}")
    with Image.open(source) as img:
        img.load()
        return img.convert("RGB")


class HFDataset(Dataset):
    """A ``datasets`` dataset with an image column and a label column, mapped onto train/val/test."""

    name = "hf"
    protocols = ("official",)
    file_backed = False  # rows of a table, not image files a split file could name
    files_from = "hub id or folder"
    protocol_docs = {
        "official": "The dataset's own splits: train, validation (as val) and test, or the mapping in option splits.",
    }

    def __init__(
        self,
        root: str | Path | None = None,
        protocol: str = "official",
        on_bad_image: str = "error",
        path: str | None = None,
        image_column: str = "image",
        label_column: str = "label",
        splits: Mapping[str, str] | None = None,
        class_names: Sequence[str] | None = None,
        config_name: str | None = None,
        cache_dir: str | None = None,
    ):
        if root is not None and path is not None and str(root) != str(path):
            raise DatasetError(f"hf: both root ({root}) and option path ({path}) given; use one")
        source = path if path is not None else root
        if source is None:
            raise DatasetError("hf: no dataset given; set --root (data.root) or option path to a hub id or a folder")
        super().__init__(None, protocol, on_bad_image)
        self.source = str(source)
        self.image_column, self.label_column = image_column, label_column
        tables = load_source(self.source, config_name, cache_dir)
        self.split_map = choose_splits(list(tables), splits, self.source)
        self._tables = {name: tables[name] for name in self.split_map.values()}
        for name, table in self._tables.items():
            for column in (image_column, label_column):
                if column not in table.column_names:
                    raise DatasetError(
                        f"hf ({self.source}): split {name!r} has no column {column!r}; columns: "
                        f"{', '.join(table.column_names)} (set option image_column / label_column)"
                    )
        self.class_names, self._labels = self.read_labels(class_names)
        self._images = {name: self.undecoded(table) for name, table in self._tables.items()}

    def read_labels(self, class_names: Sequence[str] | None) -> tuple[list[str], dict[str, list[int]]]:
        """Class names and every row's 0-based label, read from the label column without decoding images."""
        import datasets

        feature = next(iter(self._tables.values())).features[self.label_column]
        raw = {name: list(table[self.label_column]) for name, table in self._tables.items()}
        if isinstance(feature, datasets.ClassLabel):
            names = list(feature.names)
        elif all(isinstance(v, str) for values in raw.values() for v in values):
            return self.string_labels(raw, class_names)
        elif class_names is None:
            raise DatasetError(
                f"hf ({self.source}): label column {self.label_column!r} is {feature} without class "
                "names; give the option class_names=[...] (label i -> class_names[i])"
            )
        else:
            names = []
        if class_names is not None:
            if names and len(class_names) != len(names):
                raise DatasetError(
                    f"hf ({self.source}): option class_names has {len(class_names)} names but the "
                    f"dataset has {len(names)} classes ({', '.join(map(str, names[:5]))}, ...)"
                )
            names = [str(name) for name in class_names]
        for split, values in raw.items():
            bad = next((row for row, v in enumerate(values) if not (isinstance(v, int) and 0 <= v < len(names))), None)
            if bad is not None:
                raise DatasetError(
                    f"hf ({self.source}): split {split!r} row {bad} has label {values[bad]!r}, not in "
                    f"0..{len(names) - 1} (unlabelled split? leave it out with the option splits)"
                )
        return names, raw

    def string_labels(
        self, raw: dict[str, list[str]], class_names: Sequence[str] | None
    ) -> tuple[list[str], dict[str, list[int]]]:
        """String labels -> indices: into ``class_names`` when given (its order is the user's), else sorted names."""
        if class_names is None:
            names = sorted({v for values in raw.values() for v in values})
        else:
            names = [str(name) for name in class_names]
            known = set(names)
            for split, values in raw.items():
                bad = next((row for row, v in enumerate(values) if v not in known), None)
                if bad is not None:
                    raise DatasetError(
                        f"hf ({self.source}): split {split!r} row {bad} has label {values[bad]!r}, which is not in "
                        f"option class_names ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})"
                    )
        index = {name: i for i, name in enumerate(names)}
        return names, {split: [index[v] for v in values] for split, values in raw.items()}

    def undecoded(self, table: Any) -> Any:
        """The image column alone, with ``datasets``' own decoding off so that errors are ours to word."""
        import datasets

        table = table.select_columns([self.image_column])
        if isinstance(table.features[self.image_column], datasets.Image):
            table = table.cast_column(self.image_column, datasets.Image(decode=False))
        return table

    def list_records(self) -> dict[str, list[Record]]:
        return {
            ours: [Record(f"{theirs}:{row}", label) for row, label in enumerate(self._labels[theirs])]
            for ours, theirs in self.split_map.items()
        }

    def open_image(self, record: Record) -> Image.Image:
        split, _, row = record.id.rpartition(":")
        try:
            return decode_image(self._images[split][int(row)][self.image_column])
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
            raise BadImageError(
                f"hf ({self.source}): cannot read the image of row {record.id} (column {self.image_column!r}): {err}"
            ) from None

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "source": self.source,
            "split_map": self.split_map,
            "image_column": self.image_column,
            "label_column": self.label_column,
        }
