"""Checkpoints: weights as safetensors, metadata as JSON, resume state (optimizer, scheduler, RNG) as tensors.

A checkpoint ``<tag>`` in ``RUN_DIR/checkpoints`` is ``<tag>.safetensors`` (the weights to predict with: the EMA
weights when EMA is on) and ``<tag>.json`` (epoch, step, metrics). ``last-state.pt`` holds what resuming needs
besides: optimizer and scheduler state dicts, the raw (non-EMA) weights when they differ, and the python/numpy/torch
RNG states. It contains only tensors and plain containers this module produced, and is read back with
``torch.load(weights_only=True)``, which refuses anything else: no pickled code is ever executed.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fgvlm.runs import write_json

STATE_FILE = "last-state.pt"


def state_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's state dict as contiguous CPU tensors (safetensors needs both; channels_last is not)."""
    return {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}


def save_weights(path: Path, module: torch.nn.Module, metadata: dict[str, str] | None = None) -> None:
    """Write ``module``'s weights to a safetensors file atomically (temp file + rename)."""
    from safetensors.torch import save_file

    tmp = path.with_name(f".{path.name}.tmp")
    save_file(state_tensors(module), str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_weights(path: Path, module: torch.nn.Module) -> None:
    """Load a safetensors file saved by ``save_weights`` into ``module`` (all keys must match)."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    module.load_state_dict(load_file(str(path)), strict=True)


def capture_rng() -> dict[str, Any]:
    """python, numpy and torch (CPU and CUDA) generator states in a ``weights_only``-loadable form."""
    version, py_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(py_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    version, py_state, gauss = state["python"]
    random.setstate((version, tuple(py_state), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Checkpointer:
    """Reads and writes the checkpoints of one run directory."""

    def __init__(self, run_path: Path):
        self.dir = Path(run_path) / "checkpoints"

    def weights_path(self, tag: str) -> Path:
        return self.dir / f"{tag}.safetensors"

    def info_path(self, tag: str) -> Path:
        return self.dir / f"{tag}.json"

    def exists(self, tag: str) -> bool:
        return self.weights_path(tag).is_file() and self.info_path(tag).is_file()

    def save(self, tag: str, module: torch.nn.Module, info: dict[str, Any]) -> None:
        """Weights first, then the JSON: a JSON file only ever describes weights that are fully written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        save_weights(self.weights_path(tag), module, metadata={"tag": tag, "epoch": str(info.get("epoch"))})
        write_json(self.info_path(tag), info)

    def read_info(self, tag: str) -> dict[str, Any]:
        path = self.info_path(tag)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {tag!r} not found: {path} (no epoch of this run has finished)")
        return json.loads(path.read_text())

    def save_state(self, state: dict[str, Any]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{STATE_FILE}.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.dir / STATE_FILE)

    def load_state(self) -> dict[str, Any]:
        path = self.dir / STATE_FILE
        if not path.is_file():
            raise FileNotFoundError(f"cannot resume: {path} not found")
        return torch.load(path, map_location="cpu", weights_only=True)
