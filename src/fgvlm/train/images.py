"""Images for training: a decode-once, pre-resized cache of a split and the torch datasets/loaders over it.

Decoding a 500-px JPEG costs more than a small CNN's step on a CPU, so each image is decoded once, shrunk so its
shorter side is ``shorter_side`` (never enlarged) and kept as a uint8 array; augmentation then runs on the small
array every epoch. With a ``cache_dir`` the arrays are also written to one safetensors file whose name carries a
hash of (dataset, protocol, root, options, split, ids, size), so a second run skips decoding entirely.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fgvlm.data.base import Split, dataset_identity

CACHE_FORMAT = 1  # bump when the stored arrays change meaning


def shrink(image: Image.Image, shorter_side: int) -> np.ndarray:
    """RGB uint8 array of ``image`` with its shorter side reduced to ``shorter_side`` (smaller images kept as is)."""
    width, height = image.size
    scale = shorter_side / min(width, height)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def cache_key(split: Split, shorter_side: int) -> str:
    """A stable hash of everything the cached pixels depend on."""
    payload = {
        "format": CACHE_FORMAT,
        "dataset": dataset_identity(split.dataset),
        "split": split.name,
        "ids": split.ids,
        "shorter_side": shorter_side,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _decode_all(split: Split, shorter_side: int, workers: int, progress: bool) -> list[np.ndarray]:
    def load(index: int) -> np.ndarray:
        return shrink(split[index].image, shorter_side)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = pool.map(load, range(len(split)))
        if not progress:
            return list(results)
        from fgvlm.progress import track

        return list(track(results, total=len(split), description=f"caching {split.name} at {shorter_side}px"))


def cache_split(
    split: Split, shorter_side: int, cache_dir: str | Path | None = None, workers: int = 2, progress: bool = True
) -> list[np.ndarray]:
    """The split's images as pre-resized uint8 arrays, in split order; read from / written to ``cache_dir``."""
    from safetensors.numpy import load_file, save_file

    path = None
    if cache_dir is not None:
        name = f"{split.dataset.name}-{split.name}-{shorter_side}px-{cache_key(split, shorter_side)}.safetensors"
        path = Path(cache_dir).expanduser() / name
        if path.is_file():
            stored = load_file(str(path))
            return [stored[str(i)] for i in range(len(split))]
    arrays = _decode_all(split, shorter_side, workers, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({str(i): a for i, a in enumerate(arrays)}, str(tmp))
        os.replace(tmp, path)
    return arrays


class ImageClassificationData(torch.utils.data.Dataset):
    """(transformed image, label) pairs from cached arrays or straight from a ``Split`` (decoding each time)."""

    def __init__(self, images: Sequence[np.ndarray] | Split, labels: Sequence[int], transform: Callable[[Any], Any]):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images, self.labels, self.transform = images, list(labels), transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        item = self.images[index]
        image = Image.fromarray(item) if isinstance(item, np.ndarray) else item.image
        return self.transform(image), self.labels[index]


def epoch_generator(seed: int, epoch: int, rank: int = 0) -> torch.Generator:
    """The generator that fixes one epoch's shuffle and worker seeds: a function of (seed, epoch, rank) only."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)


def train_loader(
    data: torch.utils.data.Dataset,
    batch_size: int,
    epoch: int,
    *,
    seed: int,
    num_workers: int,
    rank: int = 0,
    world_size: int = 1,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """Shuffled, full batches only (MixUp/CutMix need even, equal batches), in an order fixed by (seed, epoch).

    Under DDP each rank reads its own shard through a ``DistributedSampler`` seeded the same on every rank.
    """
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    generator = epoch_generator(seed, epoch, rank)
    if world_size > 1:
        sampler = DistributedSampler(data, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(data, generator=epoch_generator(seed, epoch))
    return DataLoader(
        data,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        drop_last=True,
        generator=generator,
        pin_memory=pin_memory,
    )


def eval_loader(
    data: torch.utils.data.Dataset, batch_size: int, num_workers: int, pin_memory: bool = False
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        data, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory
    )
