"""Records of the ``coop`` and ``split-file`` protocols: a CoOp-format split file laid over a dataset's own images.

Every path in the file must be one of the dataset's images (its own listing, relative to ``image_folder()``), and
every class name must map to one of its classes (``fgvlm.data.protocols.map_class_names``); the image's label in
the dataset must agree with the class the file names. Records keep the dataset's ids, so a CoOp run and an
official run of the same image share ids (and feature caches). A complete CoOp file (as many images as published)
must have the published split sizes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fgvlm.data.base import DatasetError, Record
from fgvlm.data.protocols import COOP_DATASETS_PAGE, map_class_names, read_split_file

if TYPE_CHECKING:
    from fgvlm.data.base import Dataset


def split_file_path(dataset: Dataset) -> Path:
    """``--split-file`` for protocol split-file; CoOp's file in the dataset's folder for protocol coop."""
    if dataset.protocol == "split-file":
        if dataset.split_file is None:
            raise DatasetError(f"{dataset.name}: protocol split-file needs --split-file PATH (data.split_file)")
        return dataset.split_file
    return dataset.dataset_folder() / str(dataset.coop_split_file)


def coop_file_help(dataset: Dataset | type[Dataset], folder: Path | str) -> str:
    """Where CoOp's split file is published and where fgvlm looks for it."""
    return (
        f"CoOp's split file {dataset.coop_split_file} is not on the dataset's own server: download it from the "
        f"links in CoOp's DATASETS.md ({COOP_DATASETS_PAGE}) and put it at "
        f"{Path(folder) / str(dataset.coop_split_file)}"
    )


def _pool(dataset: Dataset) -> dict[str, Record]:
    """Every image the dataset lists (any split of its own protocol), by path relative to its image folder."""
    folder = dataset.image_folder()
    pool: dict[str, Record] = {}
    for records in dataset.list_records().values():
        for record in records:
            if record.path is not None:
                pool.setdefault(record.path.relative_to(folder).as_posix(), record)
    return pool


def _candidates(dataset: Dataset) -> dict[int, list[str]]:
    names, shown, aliases = dataset.class_names, dataset.prompt_names, dataset.aliases
    return {label: [names[label], shown[label], *aliases.get(label, [])] for label in range(len(names))}


def split_file_records(dataset: Dataset) -> dict[str, list[Record]]:
    """The splits a split file lays over the dataset's images (called with every class shown)."""
    path = split_file_path(dataset)
    if not path.is_file():
        if dataset.protocol == "coop":
            raise DatasetError(f"{dataset.name}: {path} not found. {coop_file_help(dataset, path.parent)}")
        raise DatasetError(f"{dataset.name}: split file {path} not found (--split-file / data.split_file)")
    entries = read_split_file(path, dataset.name)
    label_of = map_class_names(
        (name for items in entries.values() for _, _, name in items), _candidates(dataset), dataset.name, path
    )
    pool = _pool(dataset)
    splits: dict[str, list[Record]] = {}
    for split, items in entries.items():
        splits[split] = []
        for rel, _, name in items:
            record = pool.get(Path(rel).as_posix())
            if record is None:
                raise DatasetError(
                    f"{dataset.name}: split file {path} lists {rel!r} ({split}), which is not an image of "
                    f"{dataset.name} under {dataset.image_folder()}"
                )
            if record.label != label_of[name]:
                raise DatasetError(
                    f"{dataset.name}: split file {path} labels {rel!r} {name!r}, but {dataset.name} labels it "
                    f"{dataset.class_names[record.label]!r}"
                )
            splits[split].append(record)
    check_published_sizes(dataset, splits, path)
    return splits


def check_published_sizes(dataset: Dataset, splits: dict[str, list[Record]], path: Path) -> None:
    """A complete CoOp file (as many images as published in all) must have the published sizes per split."""
    published = dataset.coop_sizes
    if dataset.protocol != "coop" or not published:
        return
    sizes = {split: len(records) for split, records in splits.items()}
    if sum(sizes.values()) == sum(published.values()) and sizes != published:
        raise DatasetError(
            f"{dataset.name} (coop): {path} has split sizes {sizes}, not CoOp's published {published}, although it "
            f"lists as many images ({sum(published.values())})"
        )
