"""timm image classifiers: create one by name (hub, local safetensors or random weights), its preprocessing, and
batched prediction (sharded across DDP ranks and gathered back).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgvlm.config import ConfigError
from fgvlm.distributed import ProcessGroup
from fgvlm.train.images import eval_loader


def create_classifier(arch: str, num_classes: int, pretrained: bool | str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """``timm.create_model(arch, num_classes=...)`` with weights from the hub (True), a local safetensors file (a
    path) or none (False); returns the model and a description of where its weights came from (for meta.json).
    """
    import timm

    from fgvlm.registry import unknown_name
    from fgvlm.runs import fingerprint_path

    if not timm.is_model(arch):
        raise unknown_name("timm architecture", arch, timm.list_models())
    source: dict[str, Any] = {"arch": arch, "num_classes": num_classes, "pretrained": "none"}
    if pretrained is True:
        try:
            model = timm.create_model(arch, pretrained=True, num_classes=num_classes)
        except Exception as err:  # hub errors come in many types; name the fix
            raise ConfigError(
                f"pretrained weights for {arch!r} could not be loaded from the Hugging Face hub "
                f"({err}). Offline? Use a local file: --pretrained /path/model.safetensors, "
                "or --pretrained none"
            ) from err
        source.update(
            pretrained="hub", hub_id=model.pretrained_cfg.get("hf_hub_id"), tag=model.pretrained_cfg.get("tag")
        )
    else:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
        if isinstance(pretrained, str):
            path = Path(pretrained).expanduser()
            report = load_pretrained_file(model, path)
            source.update(pretrained=str(path), fingerprint=fingerprint_path(path), **report)
    source["parameters"] = sum(p.numel() for p in model.parameters())
    return model, source


def classifier_prefixes(model: torch.nn.Module) -> tuple[str, ...]:
    """State-dict prefixes of the model's classification head (timm's ``pretrained_cfg['classifier']``)."""
    names = model.pretrained_cfg.get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{name}." for name in names)


def load_pretrained_file(model: torch.nn.Module, path: Path) -> dict[str, Any]:
    """Load backbone weights from a safetensors file; a head of another class count is dropped (kept random).

    Pickle checkpoints (.pt, .pth, .bin) are refused: unpickling runs code from the file. Any other mismatch
    (keys of another architecture, wrong shapes outside the head) is an error that names the keys.
    """
    from safetensors.torch import load_file

    if path.suffix != ".safetensors":
        raise ConfigError(
            f"pretrained: {path} is not a .safetensors file; pickle checkpoints are not loaded "
            "(convert with safetensors.torch.save_file(torch.load(f, weights_only=True), out))"
        )
    if not path.is_file():
        raise ConfigError(f"pretrained: file not found: {path}")
    state = {key.removeprefix("module."): value for key, value in load_file(str(path)).items()}
    own = model.state_dict()
    head = classifier_prefixes(model)
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    bad = [k for k in mismatched if not k.startswith(head)]
    if bad:
        raise ConfigError(
            f"pretrained: {path}: shapes differ from {model.pretrained_cfg.get('architecture')} "
            f"outside the classifier: {', '.join(bad[:5])}"
        )
    for key in mismatched:
        del state[key]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing_body = [k for k in missing if not k.startswith(head)]
    if unexpected or missing_body:
        raise ConfigError(
            f"pretrained: {path} does not match the architecture: missing {missing_body[:5]}, "
            f"unexpected {list(unexpected)[:5]}"
        )
    return {"head_replaced": bool(mismatched or missing), "head_keys_skipped": sorted(set(mismatched) | set(missing))}


def data_config(model: torch.nn.Module, image_size: int | None) -> dict[str, Any]:
    """The model's own preprocessing (size, interpolation, mean/std, crop_pct), with an optional size override."""
    from timm.data import resolve_data_config

    config = resolve_data_config({}, model=model)
    if image_size is not None:
        config["input_size"] = (3, image_size, image_size)
    return config


def eval_resize(config: dict[str, Any]) -> int:
    """The shorter side the eval transform resizes to before its centre crop (timm: size / crop_pct)."""
    import math

    return math.floor(config["input_size"][-1] / config["crop_pct"])


def predict_probs(
    module: torch.nn.Module,
    data: torch.utils.data.Dataset,
    *,
    batch_size: int,
    device: torch.device,
    num_workers: int = 0,
    channels_last: bool = False,
    autocast: Any = None,
    dist: ProcessGroup | None = None,
) -> np.ndarray:
    """Softmax probabilities ``[N, C]`` (float32, dataset order) on every rank; each rank predicts 1/world of it."""
    dist = dist or ProcessGroup()
    indices = list(range(dist.rank, len(data), dist.world_size))
    loader = eval_loader(
        torch.utils.data.Subset(data, indices), batch_size, num_workers, pin_memory=device.type == "cuda"
    )
    module.eval()
    chunks = []
    with torch.inference_mode(), autocast or contextlib.nullcontext():
        for images, _ in loader:
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            chunks.append(module(images).float().softmax(dim=-1).cpu())
    probs = torch.cat(chunks).numpy() if chunks else np.zeros((0, 0), dtype=np.float32)
    parts = dist.gather((indices, probs))
    out = None
    for part_indices, part_probs in parts:
        if out is None:
            out = np.zeros((len(data), part_probs.shape[1]), dtype=np.float32)
        if part_indices:
            out[part_indices] = part_probs
    return out


def topk_metrics(probs: np.ndarray, labels: list[int], prefix: str = "val") -> dict[str, float]:
    """Accuracy, top-5 accuracy and cross-entropy of predicted probabilities, as ``train_log.jsonl`` names them
    (``val_accuracy``, ``val_top5``, ``val_loss`` for the default prefix)."""
    from fgvlm.eval.results import top_k

    target = np.asarray(labels)
    ranked = np.array([[c for c, _ in row] for row in top_k(probs, 5)]).reshape(len(target), -1)
    picked = probs[np.arange(len(target)), target]
    return {
        f"{prefix}_accuracy": float(np.mean(ranked[:, 0] == target)) if len(target) else 0.0,
        f"{prefix}_top5": float(np.mean((ranked == target[:, None]).any(axis=1))) if len(target) else 0.0,
        f"{prefix}_loss": float(np.mean(-np.log(np.clip(picked, 1e-12, None)))) if len(target) else 0.0,
    }
