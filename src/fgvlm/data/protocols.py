"""Protocols every dataset shares: CoOp-format split files, k-shot training sets and base-to-new class subsets.

These are the protocols of CoOp/CoCoOp and of the RL papers that reuse their files (Visual-RFT, CLS-RL, ReFine-RFT):

* **Split files** (``coop``, ``split-file``): JSON ``{"train"|"val"|"test": [[image path relative to the image
  folder, label, class name], ...]}`` as CoOp's authors publish them (``split_zhou_OxfordFlowers.json``, ...). The
  class names are mapped to the dataset's own (canonical, prompt and alias names, compared after
  ``fgvlm.text.normalize``), so the labels are always the dataset's.
* **k-shot** (``shots``, ``shot_seed``): Dassl's ``generate_fewshot_dataset`` as CoOp calls it. One
  ``random.Random(shot_seed)`` draws the train split first, then the validation split; items are grouped by label
  in order of first appearance, and each group gives ``rng.sample(items, k)`` (all its items when it has fewer).
  Train gets ``k`` per class, val ``min(k, 4)``; the test split is never sampled.
* **Base-to-new** (``classes``): Dassl's ``subsample_classes``. With ``n`` classes, ``base`` keeps the first
  ``ceil(n / 2)`` labels in sorted order and ``new`` the rest, each relabelled from 0. The k-shot draw happens first,
  on every class (as in CoOp), so a base run and a new run share the images they have in common with an ``all`` run.

``split_file_records`` lays a split file over a dataset's images: every path must be one of the dataset's images (its
own listing, relative to ``image_folder()``) and every class name one of its classes; the image's label in the
dataset must agree with the class the file names. Records keep the dataset's ids, so a CoOp run and an official run
of the same image share ids (and feature caches). A complete CoOp file (as many images as published) must have the
published split sizes. ``Dataset`` (``fgvlm.data.base``) calls these functions; they take it as ``dataset``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fgvlm.data.records import DatasetError, Record

SPLIT_FILE_PROTOCOLS = ("coop", "split-file")
CLASS_SUBSETS = ("all", "base", "new")
COOP_DATASETS_PAGE = "https://github.com/KaiyangZhou/CoOp/blob/main/DATASETS.md"
"""Where CoOp's authors link their split files (a file-sharing drive, not the datasets' own servers)."""
VAL_SHOTS_CAP = 4
"""CoOp's validation set for k-shot runs: min(k, 4) images per class."""

SplitEntries = dict[str, list[tuple[str, int, str]]]


def read_split_file(path: Path, dataset: str) -> SplitEntries:
    """A CoOp-format split file -> split -> [(relative path, label, class name)]; every malformed part is named."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DatasetError(f"{dataset}: cannot read split file {path}: {err}") from None
    if not isinstance(data, dict) or not data:
        raise DatasetError(f"{dataset}: split file {path} must hold a JSON object {{train|val|test: [...]}}")
    unknown = sorted(set(data) - {"train", "val", "test"})
    if unknown:
        raise DatasetError(f"{dataset}: split file {path} has unknown split(s) {unknown}; use train, val and test")
    out: SplitEntries = {}
    for split in ("train", "val", "test"):
        items = data.get(split)
        if items is None:
            continue
        if not isinstance(items, list):
            raise DatasetError(f"{dataset}: split file {path}: {split!r} must be a list of [path, label, class name]")
        for index, item in enumerate(items):
            valid = isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
            if not (valid and isinstance(item[1], int) and isinstance(item[2], str)):
                raise DatasetError(
                    f"{dataset}: split file {path}: {split}[{index}] is {item!r}, expected [path, label, class name]"
                )
        out[split] = [(str(p), int(label), str(name)) for p, label, name in items]
    return out


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def map_class_names(names: Iterable[str], candidates: dict[int, list[str]], dataset: str, path: Path) -> dict[str, int]:
    """Each class name of a split file -> the dataset's label whose names (canonical, prompt, aliases) it equals
    after normalisation. A name matching no class, or two, is an error naming it; so are two different names that
    land on one class (the file would merge two of its classes)."""
    from fgvlm.text import normalize

    index: dict[str, set[int]] = {}
    for label, forms in candidates.items():
        for form in forms:
            index.setdefault(normalize(form), set()).add(label)
    mapping: dict[str, int] = {}
    for name in sorted(set(names)):
        labels = index.get(normalize(name), set())
        if len(labels) != 1:
            found = "no class" if not labels else f"{len(labels)} classes ({sorted(labels)})"
            raise DatasetError(f"{dataset}: class name {name!r} in split file {path} maps to {found} of {dataset}")
        mapping[name] = next(iter(labels))
    owners: dict[int, str] = {}
    for name, label in mapping.items():
        if label in owners and normalize(owners[label]) != normalize(name):
            raise DatasetError(
                f"{dataset}: class names {owners[label]!r} and {name!r} in split file {path} both map to label {label}"
            )
        owners[label] = name
    return mapping


def sample_per_class(records: list[Record], shots: int, rng: random.Random) -> list[Record]:
    """Dassl's draw: records grouped by label in order of first appearance, ``rng.sample`` of each group."""
    groups: dict[int, list[Record]] = {}
    for record in records:
        groups.setdefault(record.label, []).append(record)
    chosen: list[Record] = []
    for items in groups.values():
        chosen.extend(rng.sample(items, shots) if len(items) >= shots else items)
    return chosen


def select_shots(splits: dict[str, list[Record]], shots: int, seed: int) -> dict[str, list[Record]]:
    """The k-shot train and val splits (one generator: train drawn first, then val); other splits unchanged."""
    rng = random.Random(seed)
    out = dict(splits)
    for split, k in (("train", shots), ("val", min(shots, VAL_SHOTS_CAP))):
        if split in splits:
            out[split] = sample_per_class(splits[split], k, rng)
    return out


def class_subset(num_classes: int, classes: str) -> list[int] | None:
    """The original labels a subset keeps (None for all): base = the first ceil(n/2), new = the rest."""
    if classes not in CLASS_SUBSETS:
        raise DatasetError(f"classes must be one of {', '.join(CLASS_SUBSETS)}, got {classes!r}")
    if classes == "all":
        return None
    middle = math.ceil(num_classes / 2)
    return list(range(middle)) if classes == "base" else list(range(middle, num_classes))


def keep_classes(splits: dict[str, list[Record]], kept: list[int]) -> dict[str, list[Record]]:
    """Only the records of ``kept`` labels, relabelled to their position in ``kept``."""
    from dataclasses import replace

    new_label = {label: position for position, label in enumerate(kept)}
    return {
        split: [replace(r, label=new_label[r.label]) for r in records if r.label in new_label]
        for split, records in splits.items()
    }


# -- split files laid over a dataset's images ---------------------------------------------------------------------
def split_file_path(dataset: Any) -> Path:
    """``--split-file`` for protocol split-file; CoOp's file in the dataset's folder for protocol coop."""
    if dataset.protocol == "split-file":
        if dataset.split_file is None:
            raise DatasetError(f"{dataset.name}: protocol split-file needs --split-file PATH (data.split_file)")
        return dataset.split_file
    return dataset.dataset_folder() / str(dataset.coop_split_file)


def coop_file_help(dataset: Any, folder: Path | str) -> str:
    """Where CoOp's split file is published and where fgvlm looks for it."""
    return (
        f"CoOp's split file {dataset.coop_split_file} is not on the dataset's own server: download it from the "
        f"links in CoOp's DATASETS.md ({COOP_DATASETS_PAGE}) and put it at "
        f"{Path(folder) / str(dataset.coop_split_file)}"
    )


def _pool(dataset: Any) -> dict[str, Record]:
    """Every image the dataset lists (any split of its own protocol), by path relative to its image folder."""
    folder = dataset.image_folder()
    pool: dict[str, Record] = {}
    for records in dataset.list_records().values():
        for record in records:
            if record.path is not None:
                pool.setdefault(record.path.relative_to(folder).as_posix(), record)
    return pool


def _candidates(dataset: Any) -> dict[int, list[str]]:
    names, shown, aliases = dataset.class_names, dataset.prompt_names, dataset.aliases
    return {label: [names[label], shown[label], *aliases.get(label, [])] for label in range(len(names))}


def split_file_records(dataset: Any) -> dict[str, list[Record]]:
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


def check_published_sizes(dataset: Any, splits: dict[str, list[Record]], path: Path) -> None:
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
