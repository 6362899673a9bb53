"""The build record of ``fgvlm prompts build``: how an instruction file was made, written beside it.

``data/x.jsonl`` gets ``data/x.build.json``: the source dataset (name, protocol and its description, split sizes,
citation, class names), the split, the task weights and the counts per task, the seed, the model family's wording,
task options, the MixUp/CutMix settings, the format and the command line that builds the same file again.
``fgvlm publish --dataset`` reads it for the dataset card; anyone can read it to rebuild the file.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fgvlm.data.base import Dataset
    from fgvlm.prompts.instructions import InstructionRecord
    from fgvlm.prompts.mixcut import MixCutOptions

SUFFIX = ".build.json"


@dataclasses.dataclass
class BuildSettings:
    """Everything ``fgvlm prompts build`` was asked for."""

    dataset: Dataset
    split: str
    tasks: dict[str, float]
    seed: int
    fmt: str
    family: str | None
    task_options: dict[str, dict[str, Any]]
    mixcut: MixCutOptions
    limit: int | None
    data_options: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def mixes(self) -> bool:
        from fgvlm.prompts.instructions import split_task

        return any(split_task(task)[1] for task in self.tasks)

    def command(self, out: Path) -> str:
        """The ``fgvlm prompts build`` command line that builds the same file again."""
        data = self.dataset
        args = ["fgvlm", "prompts", "build", "--dataset", data.name]
        args += ["--root", str(data.root)] if data.root is not None else []
        args += ["--protocol", data.protocol, "--split", self.split]
        if len(self.tasks) == 1:
            args += ["--task", next(iter(self.tasks))]
        else:
            args += ["--mix", ",".join(f"{task}={weight:g}" for task, weight in self.tasks.items())]
        if self.mixes:
            mix = self.mixcut
            args += ["--alpha", f"{mix.alpha:g}", "--mixcut-mode", mix.mode, "--mixcut-prob", f"{mix.prob:g}"]
        args += ["--family", self.family] if self.family else []
        args += [f"--task-option={t}.{k}={v}" for t, options in self.task_options.items() for k, v in options.items()]
        args += [f"--data-option={key}={json.dumps(value)}" for key, value in self.data_options.items()]
        args += ["--seed", str(self.seed)] + (["--limit", str(self.limit)] if self.limit is not None else [])
        return shlex.join([*args, "--format", self.fmt, "--out", str(out)])


def build_record_path(instructions: str | Path) -> Path:
    """``data/x.jsonl`` -> ``data/x.build.json``."""
    path = Path(instructions)
    return path.with_name(path.stem + SUFFIX)


def write_build_record(out: Path, records: list[InstructionRecord], settings: BuildSettings) -> Path:
    """Write ``out``'s build record; returns its path."""
    from fgvlm.runs import package_versions, write_json

    dataset = settings.dataset
    record = {
        "file": out.name,
        "format": settings.fmt,
        "dataset": {k: v for k, v in dataset.describe().items() if k not in ("skipped", "root")},
        "citation": dataset.citation,
        "class_names": list(dataset.prompt_names),
        "split": settings.split,
        "tasks": settings.tasks,
        "counts": dict(sorted(Counter(r.task for r in records).items())),
        "records": len(records),
        "seed": settings.seed,
        "family": settings.family,
        "task_options": settings.task_options,
        "mixcut": dataclasses.asdict(settings.mixcut) if settings.mixes else None,
        "limit": settings.limit,
        "data_options": settings.data_options,
        "command": settings.command(out),
        "fgvlm_version": package_versions().get("fgvlm"),
    }
    path = build_record_path(out)
    write_json(path, record)
    return path


def read_build_record(instructions: str | Path) -> dict[str, Any] | None:
    """The build record beside an instruction file, or None when there is none."""
    path = build_record_path(instructions)
    return json.loads(path.read_text()) if path.is_file() else None
