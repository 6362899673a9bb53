"""Feature extraction from a frozen VLM: batched ``backend.embed`` with a progress bar, cached, multi-process.

``split_features`` is the one way in: it returns a split's pooled features from the cache, or extracts them (one
process, or sharded over ``torchrun`` ranks and gathered back in dataset order, rank 0 writing the entry).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fgvlm.data.base import dataset_identity
from fgvlm.distributed import ProcessGroup
from fgvlm.heads.cache import CachedFeatures, FeatureCache, feature_key, ids_digest

if TYPE_CHECKING:
    import torch

    from fgvlm.data import Split
    from fgvlm.models.base import ModelConfig, VLMBackend


@dataclass(frozen=True)
class FeatureSpec:
    """What to pool: the question shown with the image, the pooling and the hidden-state layer."""

    prompt: str
    pooling: str = "mean"
    layer: int = -1


def backbone_signature(backend: VLMBackend, model_cfg: ModelConfig | None = None) -> dict[str, Any]:
    """Backbone + preprocessing ingredients of the cache key (weights identity, dtype, image processor settings)."""
    info = backend.describe()
    identity = info.get("fingerprint") or {k: v for k, v in info.items() if k not in ("device", "num_parameters")}
    processor = getattr(backend, "processor", None)
    image_processor = getattr(processor, "image_processor", None)
    preprocessing = image_processor.to_dict() if hasattr(image_processor, "to_dict") else None
    bounds = {"min_pixels": model_cfg.min_pixels, "max_pixels": model_cfg.max_pixels} if model_cfg else {}
    return {"model": identity, "dtype": str(info.get("dtype")), "preprocessing": preprocessing, **bounds}


def split_ingredients(split: Split, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Dataset ingredients of the cache key: where the data comes from (``dataset_identity``: name, protocol, root or
    source and the dataset's settings), the config's options (they can change pixels), the split and its ids."""
    return {
        "dataset": dataset_identity(split.dataset),
        "options": dict(sorted((options or {}).items())),
        "split": split.name,
        "ids": ids_digest(split.ids),
        "n": len(split),
    }


def _progress(total: int, description: str, enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from fgvlm.progress import ReportingProgress

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}")]
    progress = ReportingProgress(*columns, TimeRemainingColumn(), disable=not enabled, transient=False)
    task = progress.add_task(description, total=total, rate="")
    return progress, task


def extract_features(
    backend: VLMBackend,
    split: Split,
    spec: FeatureSpec,
    indices: Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> torch.Tensor:
    """Embed ``split[i]`` for ``indices`` (all by default) in batches: ``[len(indices), D]`` float32 on CPU."""
    import torch

    indices = list(range(len(split))) if indices is None else list(indices)
    chunks: list[torch.Tensor] = []
    bar, task = _progress(len(indices), f"features {split.dataset.name}/{split.name}", progress)
    start = time.perf_counter()
    with bar:
        for begin in range(0, len(indices), batch_size):
            images = [split[i].image for i in indices[begin : begin + batch_size]]
            chunks.append(backend.embed(images, spec.prompt, pooling=spec.pooling, layer=spec.layer).float().cpu())
            done = begin + len(images)
            bar.update(task, completed=done, rate=f"{done / max(time.perf_counter() - start, 1e-9):.1f} img/s")
    if not chunks:
        raise ValueError(f"{split.dataset.name}/{split.name}: no images to embed")
    return torch.cat(chunks)


def _gather_in_order(local: torch.Tensor, total: int, world: int) -> torch.Tensor:
    """All ranks' contiguous shards (padded to one length for all_gather) -> ``[total, D]`` in dataset order."""
    import torch
    import torch.distributed as dist

    per_rank = -(-total // world)
    padded = torch.zeros(per_rank, local.shape[1], dtype=local.dtype)
    padded[: local.shape[0]] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:total]


def split_features(
    backend: VLMBackend,
    split: Split,
    spec: FeatureSpec,
    cache: FeatureCache,
    model_cfg: ModelConfig | None = None,
    data_options: dict[str, Any] | None = None,
    batch_size: int = 16,
    progress: bool = True,
    group: ProcessGroup | None = None,
) -> tuple[CachedFeatures, bool]:
    """The split's features and whether they came from the cache; extracts and writes the entry on a miss.

    With a ``group`` of several processes (``torchrun``), every rank embeds one contiguous shard, the shards are
    gathered in dataset order and rank 0 writes the entry; all ranks return the same features.
    """
    import torch

    ingredients = {
        "backbone": backbone_signature(backend, model_cfg),
        "data": split_ingredients(split, data_options),
        "prompt": spec.prompt,
        "pooling": spec.pooling,
        "layer": spec.layer,
    }
    key = feature_key(ingredients)
    cached = cache.load(key)
    if cached is not None:
        return cached, True
    group = group or ProcessGroup()
    rank, world = group.rank, group.world_size
    per_rank = -(-len(split) // world)
    shard = range(rank * per_rank, min(len(split), (rank + 1) * per_rank))
    start = time.perf_counter()
    local = extract_features(backend, split, spec, shard, batch_size, progress=progress and rank == 0)
    features = _gather_in_order(local, len(split), world) if world > 1 else local
    seconds = time.perf_counter() - start
    labels = torch.tensor(split.labels, dtype=torch.long)
    meta = {
        **ingredients,
        "ids": split.ids,
        "shape": list(features.shape),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(split) / max(seconds, 1e-9), 2),
        "processes": world,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if rank == 0:
        cache.save(key, features, labels, meta)
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
    return CachedFeatures(features, labels, {"key": key, **meta}), False
