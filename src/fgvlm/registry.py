"""Name -> implementation tables for datasets, models and prompt tasks, imported lazily.

Entries are ``"module:attribute"`` strings (as lm-evaluation-harness does), so ``import fgvlm`` and
``fgvlm list ...`` never import torch or transformers. Model presets and prompt tasks are data files under
``fgvlm/resources``; datasets are code, one module each.
"""

from __future__ import annotations

import difflib
import importlib
import json
from functools import cache
from importlib import resources
from typing import Any

DATASETS: dict[str, str] = {
    "flowers102": "fgvlm.data.flowers102:Flowers102",
    "oxford-pets": "fgvlm.data.pets:OxfordPets",
    "fgvc-aircraft": "fgvlm.data.aircraft:FGVCAircraft",
    "food101": "fgvlm.data.food101:Food101",
    "dtd": "fgvlm.data.dtd:DTD",
    "stanford-cars": "fgvlm.data.cars:StanfordCars",
    "cub200": "fgvlm.data.cub:CUB200",
    "synthflowers": "fgvlm.data.synthflowers:SynthFlowers",
    "imagefolder": "fgvlm.data.imagefolder:ImageFolder",
    "hf": "fgvlm.data.hf:HFDataset",
}


class UnknownNameError(KeyError):
    """A registry name that does not exist; the message lists close matches."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def unknown_name(kind: str, name: str, known: list[str]) -> UnknownNameError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return UnknownNameError(f"unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known))}")


def import_object(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def dataset_class(name: str) -> type:
    if name not in DATASETS:
        raise unknown_name("dataset", name, list(DATASETS))
    return import_object(DATASETS[name])


@cache
def _resource_json(filename: str) -> Any:
    return json.loads(resources.files("fgvlm.resources").joinpath(filename).read_text())


def model_presets() -> dict[str, dict[str, Any]]:
    """Registry names -> {hub_id, family, ...}; also ``tiny-<family>`` entries built locally on demand."""
    return _resource_json("models.json")


def prompt_tasks() -> dict[str, dict[str, Any]]:
    """Prompt task names -> templates (see ``fgvlm/resources/tasks.json``)."""
    return _resource_json("tasks.json")


def resource_json(filename: str) -> Any:
    """A JSON data file shipped in ``fgvlm/resources`` (class names, aliases, presets)."""
    return _resource_json(filename)
