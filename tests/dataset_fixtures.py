"""Tiny trees in each dataset's real, official layout (file names, annotation formats, folder nesting), built by the
tests: a few classes, a few small JPEGs each, every metadata file the real archive has and torchvision reads.

Each ``build_*`` returns the root to pass as ``--root`` and writes images whose colour encodes their class, so a
test can tell a record's pixels belong to its label. ``FIXTURES`` maps registry names to (builder, expected).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

PALETTE = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 40), (160, 40, 200), (40, 200, 200)]


def write_image(path: Path, label: int, index: int = 0) -> None:
    """A 24x20 JPEG whose colour is the class's (plus a little per-image noise)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([label, index])
    pixels = np.clip(np.array(PALETTE[label % len(PALETTE)]) + rng.integers(-8, 9, (20, 24, 3)), 0, 255)
    Image.fromarray(pixels.astype(np.uint8)).save(path, "JPEG", quality=95)


def colour_of(image: Image.Image) -> int:
    """The palette index nearest to an image's mean colour."""
    mean = np.asarray(image, dtype=float).reshape(-1, 3).mean(axis=0)
    return int(np.argmin([np.abs(mean - np.array(c)).sum() for c in PALETTE]))


PET_BREEDS = ["Abyssinian", "american_bulldog", "Bengal"]  # cats are capitalised, dogs not (as in the real set)


def build_pets(root: Path) -> Path:
    """oxford-iiit-pet/{images/<Breed>_<n>.jpg, annotations/{trainval,test}.txt}: 3 breeds, 3 trainval + 2 test."""
    base = root / "oxford-iiit-pet"
    lines = {"trainval": [], "test": []}
    for label, breed in enumerate(PET_BREEDS):
        species = 1 if breed[0].isupper() else 2
        for n in range(1, 6):
            write_image(base / "images" / f"{breed}_{n}.jpg", label, n)
            lines["trainval" if n <= 3 else "test"].append(f"{breed}_{n} {label + 1} {species} {n}")
    for split, rows in lines.items():
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


AIRCRAFT = [("707-320", "Boeing 707", "Boeing"), ("A300B4", "A300", "Airbus"), ("Cessna 172", "Cessna 172", "Cessna")]


def build_aircraft(root: Path) -> Path:
    """fgvc-aircraft-2013b/data/{images/<id>.jpg, variants.txt, families.txt, manufacturers.txt,
    images_<level>_<split>.txt}: 3 variants, 2 images per split each."""
    data = root / "fgvc-aircraft-2013b" / "data"
    levels = {"variant": 0, "family": 1, "manufacturer": 2}
    files = {"variant": "variants.txt", "family": "families.txt", "manufacturer": "manufacturers.txt"}
    data.mkdir(parents=True)
    for level, column in levels.items():
        (data / files[level]).write_text("\n".join(sorted({row[column] for row in AIRCRAFT})) + "\n")
    rows: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    image_id = 1000000
    for label, _ in enumerate(AIRCRAFT):
        for split in rows:
            for _ in range(2):
                image_id += 1
                write_image(data / "images" / f"{image_id}.jpg", label, image_id)
                rows[split].append((str(image_id), label))
    rows["trainval"] = rows["train"] + rows["val"]
    for level, column in levels.items():
        for split, items in rows.items():
            text = "".join(f"{image} {AIRCRAFT[label][column]}\n" for image, label in items)
            (data / f"images_{level}_{split}.txt").write_text(text)
    return root


FOODS = ["apple_pie", "baby_back_ribs", "caesar_salad"]


def build_food(root: Path) -> Path:
    """food-101/{images/<class>/<id>.jpg, meta/{train,test}.json}: 3 dishes, 3 train + 2 test each."""
    base = root / "food-101"
    meta = {"train": {}, "test": {}}
    for label, food in enumerate(FOODS):
        for n in range(5):
            image_id = f"{100 + 10 * label + n}"
            write_image(base / "images" / food / f"{image_id}.jpg", label, n)
            meta["train" if n < 3 else "test"].setdefault(food, []).append(f"{food}/{image_id}")
    (base / "meta").mkdir(parents=True)
    for split, content in meta.items():
        (base / "meta" / f"{split}.json").write_text(json.dumps(content))
    return root


TEXTURES = ["banded", "blotchy", "braided"]


def build_dtd(root: Path) -> Path:
    """dtd/dtd/{images/<class>/<class>_<n>.jpg, labels/{train,val,test}<p>.txt} for partitions 1 and 2."""
    base = root / "dtd" / "dtd"
    for label, texture in enumerate(TEXTURES):
        for n in range(1, 7):
            write_image(base / "images" / texture / f"{texture}_{n:04d}.jpg", label, n)
    (base / "labels").mkdir(parents=True)
    for partition, order in ((1, [1, 2, 3, 4, 5, 6]), (2, [6, 5, 4, 3, 2, 1])):
        for index, split in enumerate(("train", "val", "test")):
            picked = order[2 * index : 2 * index + 2]
            lines = [f"{texture}/{texture}_{n:04d}.jpg" for texture in TEXTURES for n in picked]
            (base / "labels" / f"{split}{partition}.txt").write_text("\n".join(lines) + "\n")
    return root


CARS = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"]


def build_cars(root: Path) -> Path:
    """stanford_cars/{cars_train/, cars_test/, devkit/cars_meta.mat, devkit/cars_train_annos.mat,
    cars_test_annos_withlabels.mat}: the devkit's MATLAB structs, written with scipy."""
    import scipy.io

    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array([CARS], dtype=object)})
    fields = [(name, "O") for name in ("bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname")]
    for split, count, annotation_file in (
        ("train", 3, base / "devkit" / "cars_train_annos.mat"),
        ("test", 2, base / "cars_test_annos_withlabels.mat"),
    ):
        rows = []
        for label in range(len(CARS)):
            for n in range(count):
                fname = f"{len(rows) + 1:05d}.jpg"
                write_image(base / f"cars_{split}" / fname, label, n)
                rows.append((1, 1, 20, 18, np.uint8(label + 1), fname))
        scipy.io.savemat(annotation_file, {"annotations": np.array(rows, dtype=fields).reshape(1, -1)})
    return root


CUB = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "103.Sayornis", "110.Geococcyx"]


def build_cub(root: Path) -> Path:
    """CUB_200_2011/{images/<class>/<Name>_<n>.jpg, images.txt, image_class_labels.txt, train_test_split.txt,
    classes.txt}: 4 real CUB classes, 3 train + 2 test each (CUB numbers classes from 1 in classes.txt)."""
    base = root / "CUB_200_2011"
    images, labels, split = [], [], []
    for label, folder in enumerate(CUB):
        stem = folder.split(".", 1)[1]
        for n in range(5):
            image_id = len(images) + 1
            rel = f"{folder}/{stem}_{n:04d}_{image_id}.jpg"
            write_image(base / "images" / rel, label, n)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {label + 1}")
            split.append(f"{image_id} {1 if n < 3 else 0}")
    (base / "classes.txt").write_text("".join(f"{i + 1} {name}\n" for i, name in enumerate(CUB)))
    for name, rows in (("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        (base / name).write_text("\n".join(rows) + "\n")
    return root


FIXTURES = {
    "oxford-pets": (build_pets, {"train": 9, "test": 6}, ["Abyssinian", "American Bulldog", "Bengal"]),
    "fgvc-aircraft": (build_aircraft, {"train": 6, "val": 6, "test": 6}, [a[0] for a in AIRCRAFT]),
    "food101": (build_food, {"train": 9, "test": 6}, FOODS),
    "dtd": (build_dtd, {"train": 6, "val": 6, "test": 6}, TEXTURES),
    "stanford-cars": (build_cars, {"train": 9, "test": 6}, CARS),
    "cub200": (build_cub, {"train": 12, "test": 8}, CUB),
}
"""Registry name -> (builder, split sizes, class names in label order)."""


def write_coop_file(path: Path, splits: dict[str, list[tuple[str, int, str]]]) -> Path:
    """A split file exactly in CoOp's format: {"train"|"val"|"test": [[path, label, class name], ...]}."""
    path.write_text(json.dumps({split: [list(item) for item in items] for split, items in splits.items()}))
    return path
