"""SynthFlowers: a procedural fine-grained flower dataset drawn on the fly, for offline demos and tests.

Each class is one combination of four fine attributes -- petal count, petal shape, centre colour and a petal hue
band -- and images vary in nuisances that carry no class information: rotation, scale, position, background colour
and texture, an optional stem, pixel noise. Nothing is stored: an image is drawn from (seed, split, index), so the
same seed gives byte-identical images (for given numpy and Pillow versions) and a new seed gives a fresh sample of
the same classes.

Class names are invented but pronounceable and encode the attributes ("amberlit pennaspine": orange petals, yellow
centre, five pointed petals). The classes of ``num_classes=K`` are the first K of one fixed order, so names and
attributes are stable for a given K, and the classes of a smaller K are a prefix of those of a larger one.
"""

from __future__ import annotations

import colorsys
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from fgvlm.data.base import SPLITS, Dataset, DatasetError, Record

# The attribute tables (data, not branches): every class is one entry of their product.
HUE_BANDS = {"ember": 0.99, "amber": 0.075, "gold": 0.145, "azur": 0.585, "plum": 0.76, "blush": 0.9}
CENTRES = {"lit": (235, 200, 40), "dusk": (70, 40, 25), "frost": (245, 245, 235)}  # yellow, dark brown, white
PETAL_COUNTS = {"tessa": 4, "penna": 5, "hexa": 6, "octa": 8}
PETAL_SHAPES = ("lume", "spine", "cleft")  # round, pointed, notched tip
ORDER_SEED = 20_240_607  # fixes the one class order; changing it renames every class
SUPERSAMPLE = 2  # drawn at 2x and box-reduced: smooth edges at a fraction of a millisecond
DEFAULT_PER_CLASS = {"train": 24, "val": 8, "test": 8}
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}


@dataclass(frozen=True)
class FlowerClass:
    """The fine attributes that define one class, and its invented name."""

    name: str
    hue: float
    centre: tuple[int, int, int]
    petals: int
    shape: str


@cache
def class_table() -> tuple[FlowerClass, ...]:
    """All attribute combinations in the one fixed (shuffled) order that ``num_classes`` takes a prefix of."""
    combos = list(itertools.product(HUE_BANDS, CENTRES, PETAL_COUNTS, PETAL_SHAPES))
    order = np.random.default_rng(ORDER_SEED).permutation(len(combos))
    return tuple(
        FlowerClass(f"{hue}{centre} {count}{shape}", HUE_BANDS[hue], CENTRES[centre], PETAL_COUNTS[count], shape)
        for hue, centre, count, shape in (combos[i] for i in order)
    )


def petal_outline(shape: str, length: float, width: float, points: int = 9) -> np.ndarray:
    """One petal along +x from the origin as polygon vertices (2, N): the width profile sets the shape."""
    t = np.linspace(0.0, 1.0, points)
    x = length * t
    if shape == "lume":  # round
        half = width * np.sin(np.pi * t) ** 0.7
    elif shape == "spine":  # pointed
        half = 0.8 * width * np.sin(np.pi * t**0.6) * (1.0 - t) ** 0.4
    else:  # "cleft": a blunt end cut by a V notch
        half = width * np.sin(0.75 * np.pi * t) ** 0.7
    upper, lower = np.stack([x, half]), np.stack([x[::-1], -half[::-1]])
    if shape == "cleft":
        return np.concatenate([upper, [[0.78 * length], [0.0]], lower], axis=1)
    return np.concatenate([upper, lower], axis=1)


def hsv_rgb(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def draw_background(draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int) -> None:
    """A muted background colour with one of four textures: plain, stripes, dots or blotches."""
    base = rng.uniform(0, 1)
    draw.rectangle([0, 0, size, size], fill=hsv_rgb(base, rng.uniform(0.05, 0.35), rng.uniform(0.25, 0.7)))
    texture = int(rng.integers(4))
    shade = hsv_rgb(base + rng.uniform(-0.1, 0.1), rng.uniform(0.05, 0.4), rng.uniform(0.2, 0.8))
    if texture == 1:
        step = int(rng.integers(size // 10, size // 4))
        offset = int(rng.integers(step))
        for x in range(-size + offset, size, step):
            draw.line([(x, 0), (x + size, size)], fill=shade, width=max(1, step // 3))
    elif texture == 2:
        for cx, cy, r in zip(*rng.uniform(0, size, (2, 25)), rng.uniform(size / 60, size / 25, 25), strict=True):
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=shade)
    elif texture == 3:
        for cx, cy, r in zip(*rng.uniform(0, size, (2, 5)), rng.uniform(size / 10, size / 5, 5), strict=True):
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=shade)


def draw_flower(flower: FlowerClass, rng: np.random.Generator, image_size: int) -> Image.Image:
    """One image of ``flower``: the class attributes fixed, every nuisance drawn from ``rng``."""
    size = image_size * SUPERSAMPLE
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    draw_background(draw, rng, size)
    cx, cy = size * (0.5 + rng.uniform(-0.12, 0.12, 2))
    radius = size * rng.uniform(0.28, 0.4)
    if rng.random() < 0.5:  # a stem: nuisance only
        draw.line(
            [(cx, cy), (cx + rng.uniform(-0.2, 0.2) * size, size)],
            fill=hsv_rgb(0.3, 0.6, 0.45),
            width=max(1, size // 40),
        )
    outline = petal_outline(flower.shape, radius, radius * rng.uniform(0.3, 0.4))
    start = rng.uniform(0, 2 * math.pi)
    saturation, value = rng.uniform(0.55, 0.9), rng.uniform(0.7, 1.0)
    for k in range(flower.petals):
        angle = start + 2 * math.pi * k / flower.petals + rng.uniform(-0.08, 0.08)
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        xy = rotation @ outline + np.array([[cx], [cy]])
        colour = hsv_rgb(flower.hue + rng.uniform(-0.02, 0.02), saturation, value - rng.uniform(0, 0.1))
        draw.polygon(list(map(tuple, xy.T.tolist())), fill=colour)
    disc = radius * rng.uniform(0.22, 0.3)
    centre = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in flower.centre)
    draw.ellipse([cx - disc, cy - disc, cx + disc, cy + disc], fill=centre)
    small = np.asarray(image.reduce(SUPERSAMPLE), dtype=np.int16)
    noise = rng.normal(0.0, rng.uniform(0.0, 8.0), small.shape)
    return Image.fromarray(np.clip(small + noise, 0, 255).astype(np.uint8))


def per_class_sizes(value: int | Sequence[int] | Mapping[str, int] | None) -> dict[str, int]:
    """``images_per_class`` as given (one int, a train/val/test list, or a partial mapping) -> split -> count."""
    if value is None:
        return dict(DEFAULT_PER_CLASS)
    if isinstance(value, int):
        sizes = dict.fromkeys(SPLITS, value)
    elif isinstance(value, Mapping):
        unknown = sorted(set(value) - set(SPLITS))
        if unknown:
            raise DatasetError(f"synthflowers: images_per_class has unknown split(s) {unknown}; use {list(SPLITS)}")
        sizes = {**DEFAULT_PER_CLASS, **value}
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == len(SPLITS):
        sizes = dict(zip(SPLITS, value, strict=True))
    else:
        raise DatasetError(
            f"synthflowers: images_per_class must be an int, a [train, val, test] list or a mapping "
            f"like {{train: 24, val: 8, test: 8}}; got {value!r}"
        )
    for split, n in sizes.items():
        if not isinstance(n, int) or n < 0:
            raise DatasetError(f"synthflowers: images_per_class[{split}] must be an integer >= 0, got {n!r}")
    return {split: n for split, n in sizes.items() if n > 0}


class SynthFlowers(Dataset):
    """Procedural fine-grained flowers: ``num_classes`` attribute combinations, images drawn from a seed."""

    name = "synthflowers"
    protocols = ("official",)
    object_word = "flower"
    offline = True
    files_from = "drawn, no files"
    file_backed = False
    protocol_docs = {
        "official": "Generated train/val/test splits (default 24/8/8 images per class), drawn from (seed, split, "
        "index); classes differ in petal count, petal shape, centre colour and hue band.",
    }

    def __init__(
        self,
        root: str | Path | None = None,
        protocol: str = "official",
        on_bad_image: str = "error",
        num_classes: int = 12,
        image_size: int = 64,
        images_per_class: int | Sequence[int] | Mapping[str, int] | None = None,
        seed: int = 0,
    ):
        super().__init__(None, protocol, on_bad_image)  # nothing on disk: a root would be meaningless
        table = class_table()
        if not isinstance(num_classes, int) or not 2 <= num_classes <= len(table):
            raise DatasetError(f"synthflowers: num_classes must be an integer in 2..{len(table)}, got {num_classes!r}")
        if not isinstance(image_size, int) or image_size < 16:
            raise DatasetError(f"synthflowers: image_size must be an integer >= 16, got {image_size!r}")
        if not isinstance(seed, int):
            raise DatasetError(f"synthflowers: seed must be an integer, got {seed!r}")
        self.flowers = table[:num_classes]
        self.class_names = [flower.name for flower in self.flowers]
        self.image_size = image_size
        self.seed = seed
        self.images_per_class = per_class_sizes(images_per_class)

    def list_records(self) -> dict[str, list[Record]]:
        """Records in class-major order: ``<split>-<index>`` with label ``index // images_per_class``."""
        return {
            split: [Record(f"{split}-{i:05d}", i // n) for i in range(n * len(self.flowers))]
            for split, n in self.images_per_class.items()
        }

    @property
    def ignored_head_words(self) -> tuple[str, ...]:
        from fgvlm.data.flowers102 import FLOWER_HEAD_WORDS

        return FLOWER_HEAD_WORDS

    def open_image(self, record: Record) -> Image.Image:
        split, _, index = record.id.rpartition("-")
        rng = np.random.default_rng([self.seed, SPLIT_CODES[split], int(index)])
        return draw_flower(self.flowers[record.label], rng, self.image_size)

    def attributes(self, label: int) -> dict[str, Any]:
        """The fine attributes of one class (for reports and for checking what a model confuses)."""
        flower = self.flowers[label if self.kept_labels is None else self.kept_labels[label]]
        return {"petals": flower.petals, "shape": flower.shape, "hue": flower.hue, "centre": flower.centre}

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "seed": self.seed,
            "image_size": self.image_size,
            "images_per_class": self.images_per_class,
        }
