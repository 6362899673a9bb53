"""The build record of ``fgvlm prompts build``: how an instruction file was made, written beside it.

``data/x.jsonl`` gets ``data/x.build.json``: the source dataset (name, protocol and its description, split sizes,
citation, class names), the split, the task weights and the counts per task, the seed, the model family's wording,
task options, the MixUp/CutMix settings, the format and the command line. ``fgvlm publish --dataset`` reads it for the
dataset card; anyone can read it to rebuild the file.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fgvlm.data.base import Dataset
    from fgvlm.prompts.instructions import InstructionRecord
    from fgvlm.prompts.mixcut import MixCutOptions

SUFFIX = ".build.json"


def build_record_path(instructions: str | Path) -> Path:
    """``data/x.jsonl`` -> ``data/x.build.json``."""
    path = Path(instructions)
    return path.with_name(path.stem + SUFFIX)


def write_build_record(
    out: Path,
    records: list[InstructionRecord],
    *,
    dataset: Dataset,
    split: str,
    tasks: dict[str, float],
    seed: int,
    fmt: str,
    family: str | None,
    task_options: dict[str, dict[str, Any]],
    mixcut: MixCutOptions,
    limit: int | None,
) -> Path:
    """Write ``out``'s build record; returns its path."""
    from fgvlm.prompts.instructions import MIXCUT_TASK
    from fgvlm.runs import package_versions, write_json

    described = {k: v for k, v in dataset.describe().items() if k not in ("skipped", "root")}
    record = {
        "file": out.name,
        "format": fmt,
        "dataset": described,
        "citation": dataset.citation,
        "class_names": list(dataset.prompt_names),
        "split": split,
        "tasks": tasks,
        "counts": dict(sorted(Counter(r.task for r in records).items())),
        "records": len(records),
        "seed": seed,
        "family": family,
        "task_options": task_options,
        "mixcut": dataclasses.asdict(mixcut) if MIXCUT_TASK in tasks else None,
        "limit": limit,
        "command": " ".join(["fgvlm", *sys.argv[1:]]),
        "fgvlm_version": package_versions().get("fgvlm"),
    }
    path = build_record_path(out)
    write_json(path, record)
    return path


def read_build_record(instructions: str | Path) -> dict[str, Any] | None:
    """The build record beside an instruction file, or None when there is none."""
    path = build_record_path(instructions)
    return json.loads(path.read_text()) if path.is_file() else None
