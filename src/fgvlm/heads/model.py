"""The classification head: optional standardisation, Dropout + Linear (or a small MLP); saved as safetensors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

HEAD_WEIGHTS = "head.safetensors"
HEAD_INFO = "head.json"


class ClassificationHead(nn.Module):
    """Features ``[B, D]`` -> logits ``[B, C]``.

    The train split's feature mean/std live in buffers, so a saved head standardises new features exactly as in
    training (identity when standardisation is off).
    """

    def __init__(
        self, in_dim: int, num_classes: int, kind: str = "linear", hidden_dim: int = 512, dropout: float = 0.1
    ):
        super().__init__()
        self.config = {
            "kind": kind,
            "in_dim": in_dim,
            "num_classes": num_classes,
            "hidden_dim": hidden_dim,
            "dropout": dropout,
        }
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        if kind == "linear":
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, num_classes))
        elif kind == "mlp":
            self.net = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(in_dim, hidden_dim),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, num_classes),
            )
        else:
            raise ValueError(f"unknown head kind {kind!r}; choose 'linear' or 'mlp'")

    def set_standardization(self, features: torch.Tensor) -> None:
        """Use the mean/std of ``features`` (the train split); a constant dimension keeps std 1."""
        std = features.std(dim=0)
        self.mean.copy_(features.mean(dim=0))
        self.std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net((features - self.mean) / self.std)


def build_head(in_dim: int, num_classes: int, kind: str, hidden_dim: int, dropout: float, seed: int):
    """A head initialised from ``seed`` alone (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ClassificationHead(in_dim, num_classes, kind, hidden_dim, dropout)


def save_head(head: ClassificationHead, run_dir: str | Path, info: dict[str, Any]) -> None:
    """``head.safetensors`` (weights + standardisation buffers) and ``head.json`` (dims, backbone, metrics...)."""
    from safetensors.torch import save_file

    from fgvlm.runs import write_json

    run_dir = Path(run_dir)
    state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(run_dir / HEAD_WEIGHTS))
    write_json(run_dir / HEAD_INFO, {**info, "head": head.config})


def head_info(
    *,
    dataset: Any,
    backbone: dict[str, Any],
    signature: dict[str, Any],
    model_config: dict[str, Any],
    prompt: str,
    pooling: str,
    layer: int,
    standardize: bool,
    training: str,
    data_options: dict[str, Any],
    recipe: dict[str, Any],
    best: tuple[int | None, float | None],
    split: str,
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """``head.json``'s fields (``save_head`` adds the head's dims): what ``fgvlm head eval`` and ``fgvlm predict``
    need to rebuild the features (backbone, prompt, pooling, layer) and read the classes, plus how it was trained
    and what it scored. One builder for ``fgvlm head train`` and ``objective: classify`` alike."""
    return {
        "class_names": dataset.class_names,
        "prompt_names": dataset.prompt_names,
        "backbone": backbone,
        "backbone_signature": signature,
        "model_config": model_config,
        "prompt": prompt,
        "pooling": pooling,
        "layer": layer,
        "standardize": standardize,
        "training": training,
        "dataset": {"name": dataset.name, **dataset.protocol_header(), "options": data_options},
        "recipe": recipe,
        "best_step": best[0],
        "best_val": best[1],
        "metrics": {split: {k: metrics[k] for k in ("accuracy", "top5_accuracy", "macro_f1", "n")}},
    }


def load_head(run_dir: str | Path) -> tuple[ClassificationHead, dict[str, Any]]:
    """A trained head and its ``head.json`` from a ``fgvlm head train`` run directory."""
    from safetensors.torch import load_file

    run_dir = Path(run_dir)
    info_path = run_dir / HEAD_INFO
    if not info_path.is_file():
        raise FileNotFoundError(f"{run_dir}: no {HEAD_INFO}; is this a `fgvlm head train` run directory?")
    info = json.loads(info_path.read_text())
    config = info["head"]
    head = ClassificationHead(
        config["in_dim"], config["num_classes"], config["kind"], config["hidden_dim"], config["dropout"]
    )
    head.load_state_dict(load_file(run_dir / HEAD_WEIGHTS))
    return head.eval(), info
