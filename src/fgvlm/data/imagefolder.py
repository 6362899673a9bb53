"""ImageFolder: users' own fine-grained data as one folder per class (CUB, Stanford Cars, Aircraft prepared that way).

Layouts (detected):

* flat: ``root/<class>/**/*.jpg`` -- split by a split file (option ``split_file``) or, without one, by a seeded
  stratified split (options ``val_fraction`` (default 0.1), ``test_fraction`` (default 0.2), ``seed`` (default 0)).
* pre-split: ``root/train/<class>/...``, ``root/val/<class>/...``, ``root/test/<class>/...`` (any of the three, train
  or test required; ``validation``/``valid`` also read as val) -- used as is.

Class names are the class folder names, sorted; in prompts, underscores become spaces and a CUB-style number
prefix is dropped ("001.Black_footed_Albatross" -> "Black footed Albatross"). Record ids are paths relative to root
("daisy/img_01.jpg"). Images: .jpg .jpeg .png .bmp .gif .webp .tif .tiff (any case); hidden files and other
extensions are ignored; a class folder without a single image is an error.

Split file format (paths relative to root, '/' separators; split values train, val, test -- validation and valid
are read as val):

* JSON: one object ``{"daisy/img_01.jpg": "train", "daisy/img_02.jpg": "test", ...}``.
* CSV (``.csv``, comma) or TSV (``.tsv``/``.txt``, tab): two columns ``path,split``, one image a row; a first row
  ``path,split`` is read as a header. Blank lines and lines starting with ``#`` are ignored.

Every path listed must exist under root; images not listed are left out and counted (``describe()["unlisted"]``).
(This option is the folder's own split; ``data.protocol: split-file`` with ``data.split_file`` lays a CoOp-format
file over the images instead, as on every file-backed dataset.)
"""

from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path
from typing import Any

from fgvlm.data.base import SPLITS, Dataset, DatasetError, Record

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
NUMBER_PREFIX = re.compile(r"^\d+\.(?=\D)")  # CUB "001." only: a leading year ("2012_Tesla") is part of the name


def list_images(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, without hidden files or other extensions."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.is_file()
    )


def class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def display_name(folder_name: str) -> str:
    """Folder name as shown in prompts: no CUB-style number prefix, underscores as spaces."""
    return " ".join(NUMBER_PREFIX.sub("", folder_name).replace("_", " ").split()) or folder_name


def stratified_split(
    paths_by_class: dict[str, list[str]], val_fraction: float, test_fraction: float, seed: int
) -> dict[str, dict[str, list[str]]]:
    """Split each class on its own: round(n * fraction) images to val and test, the rest (at least one) to train.

    Each class is shuffled with a generator seeded by (seed, class name), so adding a class leaves the others' splits
    unchanged.
    """
    out: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
    for name, paths in paths_by_class.items():
        shuffled = sorted(paths)
        random.Random(f"{seed}/{name}").shuffle(shuffled)
        n = len(shuffled)
        n_test = min(int(n * test_fraction + 0.5), n - 1)
        n_val = min(int(n * val_fraction + 0.5), n - 1 - n_test)
        out["test"][name] = sorted(shuffled[:n_test])
        out["val"][name] = sorted(shuffled[n_test : n_test + n_val])
        out["train"][name] = sorted(shuffled[n_test + n_val :])
    return out


def read_split_file(path: Path) -> dict[str, str]:
    """A split file (JSON object, or CSV/TSV rows ``path,split``) -> relative path -> train/val/test."""
    if not path.is_file():
        raise DatasetError(f"imagefolder: split file {path} not found")
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"imagefolder: split file {path} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise DatasetError(f"imagefolder: split file {path} must hold one JSON object {{path: split}}")
        entries = [(f"key {key!r}", key, value) for key, value in data.items()]
    else:
        delimiter = "," if path.suffix.lower() == ".csv" else "\t"
        entries = []
        for number, row in enumerate(csv.reader(text.splitlines(), delimiter=delimiter), start=1):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            if number == 1 and [cell.strip().lower() for cell in row] == ["path", "split"]:
                continue
            if len(row) != 2:
                raise DatasetError(
                    f"imagefolder: {path} line {number}: expected 2 columns (path, split), got {len(row)}: {row!r}"
                )
            entries.append((f"line {number}", row[0].strip(), row[1].strip()))
    out = {}
    for where, rel, value in entries:
        split = SPLIT_ALIASES.get(str(value).strip().lower())
        if split is None:
            raise DatasetError(f"imagefolder: {path} {where}: unknown split {value!r}; use train, val or test")
        out[Path(rel).as_posix()] = split
    return out


class ImageFolder(Dataset):
    """One folder per class, flat (split by file or seeded fractions) or pre-split into train/val/test folders."""

    name = "imagefolder"
    protocols = ("official",)
    protocol_docs = {
        "official": "The folder's own train/val/test folders if present, else the split file, else a seeded "
        "stratified split (val_fraction, test_fraction, seed).",
    }

    def __init__(
        self,
        root: str | Path | None = None,
        protocol: str = "official",
        on_bad_image: str = "error",
        split_file: str | Path | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
    ):
        if root is None:
            raise DatasetError("imagefolder: no root given; point --root (data.root) at a folder of class folders")
        super().__init__(root, protocol, on_bad_image)
        if not self.root.is_dir():
            raise DatasetError(f"imagefolder: root {self.root} is not a folder")
        for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise DatasetError(f"imagefolder: {key} must be a number in [0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1:
            raise DatasetError(
                f"imagefolder: val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
            )
        self.split_file = Path(split_file).expanduser() if split_file is not None else None
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.unlisted = 0
        self.layout = "pre-split" if self.split_folders() else "flat"
        if self.layout == "pre-split" and self.split_file is not None:
            raise DatasetError(
                f"imagefolder: {self.root} is already split into {', '.join(self.split_folders())} "
                f"folders; drop the split_file option or use a flat root/<class>/ layout"
            )
        self._images = self.scan()
        self.class_names = sorted({name for classes in self._images.values() for name in classes})

    def split_folders(self) -> dict[str, Path]:
        """Our split name -> folder, when root holds train/val/test folders (the pre-split layout)."""
        found: dict[str, Path] = {}
        for folder in class_folders(self.root):
            split = SPLIT_ALIASES.get(folder.name.lower())
            if split in found:
                raise DatasetError(f"imagefolder: {found[split]} and {folder} both read as the {split} split; keep one")
            if split is not None:
                found[split] = folder
        return found if "train" in found or "test" in found else {}

    def scan(self) -> dict[str, dict[str, list[str]]]:
        """Folder -> {group: {class name: [relative paths]}}; a group is a split folder, or '' for the flat layout."""
        groups = self.split_folders() or {"": self.root}
        found: dict[str, dict[str, list[str]]] = {}
        for group, folder in groups.items():
            classes = class_folders(folder)
            found[group] = {}
            for class_dir in classes:
                images = list_images(class_dir)
                if not images:
                    raise DatasetError(
                        f"imagefolder: class folder {class_dir} has no images (looked for "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))})"
                    )
                found[group][class_dir.name] = [p.relative_to(self.root).as_posix() for p in images]
        if not any(found.values()):
            where = " or ".join(str(folder) for folder in groups.values())
            raise DatasetError(
                f"imagefolder: no class folders in {where}; expected root/<class>/<image> or root/train/<class>/<image>"
            )
        return found

    def list_records(self) -> dict[str, list[Record]]:
        if self.layout == "pre-split":
            by_split = self._images
        elif self.split_file is not None:
            by_split = self.split_by_file(self._images[""])
        else:
            by_split = stratified_split(self._images[""], self.val_fraction, self.test_fraction, self.seed)
        label = {name: i for i, name in enumerate(self.class_names)}
        return {
            split: [Record(rel, label[name], self.root / rel) for name in sorted(classes) for rel in classes[name]]
            for split in SPLITS
            if (classes := by_split.get(split)) and any(classes.values())
        }

    def split_by_file(self, images: dict[str, list[str]]) -> dict[str, dict[str, list[str]]]:
        assignment = read_split_file(self.split_file)
        owner = {rel: name for name, paths in images.items() for rel in paths}
        missing = sorted(set(assignment) - set(owner))
        if missing:
            raise DatasetError(
                f"imagefolder: {self.split_file} lists {len(missing)} path(s) that are not images "
                f"under {self.root}, e.g. {', '.join(missing[:3])}"
            )
        out: dict[str, dict[str, list[str]]] = {split: {} for split in SPLITS}
        for rel in sorted(owner):
            if rel in assignment:
                out[assignment[rel]].setdefault(owner[rel], []).append(rel)
        self.unlisted = len(owner) - len(assignment)
        return out

    @property
    def prompt_names(self) -> list[str]:
        return [display_name(name) for name in self.class_names]

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "layout": self.layout}  # first: it lists the records, counting unlisted ones
        if self.layout == "flat" and self.split_file is not None:
            out |= {"split_file": str(self.split_file), "unlisted": self.unlisted}
        elif self.layout == "flat":
            out |= {"val_fraction": self.val_fraction, "test_fraction": self.test_fraction, "seed": self.seed}
        return out
