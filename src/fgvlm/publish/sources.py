"""What can be published: a table of source classes, each recognising its kind of input by its files.

A source answers ``matches(path)``, knows its repository type, a content hash for the commit message, and
``stage(folder)`` writes the repository's files (README.md card included). Run sources read a run directory through
its FILES only (``config.yaml``, ``meta.json``, ``metrics.json``, ``done.json``, ``train_log.jsonl``, ``RUN/model``,
head and checkpoint files), never through the training code that wrote it, and only a finished run (``done.json``)
is published. Entries are ``"module:Class"`` strings, tried in order, so importing this module loads no torch.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path
from typing import Any

from fgvlm.config import ConfigError
from fgvlm.publish.config import PublishConfig
from fgvlm.registry import import_object

SOURCES: tuple[str, ...] = (
    "fgvlm.publish.finetuned:FineTunedModel",
    "fgvlm.publish.head:HeadModel",
    "fgvlm.publish.cnn:CNNModel",
    "fgvlm.publish.instructions:InstructionSet",
)
"""Every publishable kind, in the order they are tried (a fine-tuned run with a classify head is a FineTunedModel)."""
FGVLM_DIR = "fgvlm"
"""Folder in a model repository holding fgvlm's own files (config, metrics, training log and curves)."""


class PublishError(ConfigError):
    """A source that cannot be published as asked, or an upload that failed; the message is one line."""


class Source:
    """One publishable thing (see the module docstring)."""

    repo_type: str = "model"
    label: str = "source"
    """What it is, in messages and the commit title ("sft run", "instruction set")."""

    def __init__(self, path: Path, cfg: PublishConfig):
        self.path = path
        self.cfg = cfg
        self.notes: list[str] = []
        """Notices for the user (an unknown licence, a base model that is a local folder)."""

    @classmethod
    def matches(cls, path: Path) -> bool:
        raise NotImplementedError

    def content_hash(self) -> str:
        """What identifies the published content (a run's config hash; instruction data's content hash)."""
        raise NotImplementedError

    def stage(self, folder: Path) -> None:
        """Write every file of the repository into the empty ``folder``."""
        raise NotImplementedError

    def commit_message(self) -> str:
        """The commit's title: names the content hash, so a second attempt can find a commit already made."""
        return f"fgvlm publish: {self.label} {self.path.name} ({self.content_hash()})"


def open_source(cfg: PublishConfig) -> Source:
    """The source ``cfg.source`` names; one clear line when it is not publishable or the repo type does not fit."""
    path = Path(cfg.source).expanduser()
    if not path.exists():
        raise PublishError(f"{path}: no such file or directory")
    for entry in SOURCES:
        cls = import_object(entry)
        if not cls.matches(path):
            continue
        if cls.repo_type == "dataset" and not cfg.dataset:
            raise PublishError(f"{path} is instruction data: publish it with --dataset (a dataset repository)")
        if cls.repo_type != "dataset" and cfg.dataset:
            raise PublishError(f"{path} is a {cls.label} (a model): --dataset is for `fgvlm prompts build` output")
        return cls(path, cfg)
    raise PublishError(
        f"{path}: nothing fgvlm publishes: expected a finished run directory (sft/rl with model/, a head run with "
        "head.json, a CNN run with checkpoints/) or `fgvlm prompts build` output (FILE.jsonl or FILE.json with its "
        "FILE.build.json, or a folder of them)"
    )


class RunSource(Source):
    """A finished run directory, read through its files (``fgvlm.report.rundirs.load_run``)."""

    def __init__(self, path: Path, cfg: PublishConfig):
        from fgvlm.report.rundirs import load_run

        super().__init__(path, cfg)
        self.run = load_run(path)
        if self.run.done is None:
            raise PublishError(f"{path}: the run has not finished (no done.json); only a finished run is published")
        if self.run.metrics is None:
            raise PublishError(f"{path}: no usable metrics.json ({'; '.join(self.run.problems)})")
        if cfg.limit is not None:  # e.g. a study's `*.limit=8` quick check: a trained model is what it is
            self.notes.append(f"limit {cfg.limit} applies to instruction data; a model is published whole")

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"{self.run.kind} run"

    @property
    def config(self) -> dict[str, Any]:
        return self.run.config

    def content_hash(self) -> str:
        return str(self.run.done.get("config_hash"))

    def stage_run_files(self, folder: Path) -> None:
        """``fgvlm/``: the resolved config, metrics, training log, class names and the training-curve PNG."""
        target = folder / FGVLM_DIR
        target.mkdir(parents=True, exist_ok=True)
        for name in ("config.yaml", "metrics.json", "train_log.jsonl"):
            if (self.path / name).is_file():
                shutil.copyfile(self.path / name, target / name)
        names = self.class_names()
        if names:
            (target / "class_names.json").write_text(_json(names))
        curves = training_curves_png(self.run.train_log)
        if curves is not None:
            (target / "training_curves.png").write_bytes(curves)

    def class_names(self) -> list[str]:
        """The class names in label order (confusion.json's rows, else metrics' per-class accuracy keys)."""
        rows = (self.run.confusion or {}).get("rows")
        if isinstance(rows, list) and rows:
            return [str(r) for r in rows]
        return list((self.run.metrics or {}).get("per_class_accuracy") or {})

    def base_and_license(self, name: str | None) -> tuple[str | None, str | None]:
        """The base model's Hub id (``--base-model`` wins) and the licence (``--license`` wins, else the base's)."""
        from fgvlm.publish.card import hub_model_id, inherited_license

        base = self.cfg.base_model or hub_model_id(name)
        if base is None and name:
            self.notes.append(
                f"base_model: {name!r} is not a Hub model; pass --base-model ORG/NAME to link the card to one"
            )
        license_ = self.cfg.license or inherited_license(base, name)
        if license_ is None:
            self.notes.append("license: unknown (the base model's card could not be read); pass --license ID")
        return base, license_

    def training_datasets(self) -> list[str]:
        """The card's ``datasets``: ``--set datasets=[...]`` when given, else the run's dataset name."""
        if self.cfg.datasets:
            return list(self.cfg.datasets)
        dataset = (self.run.metrics or {}).get("dataset")
        return [str(dataset)] if dataset else []

    def write_card(self, folder: Path, spec: Any) -> None:
        from fgvlm.publish.card import render_model_card

        (folder / "README.md").unlink(missing_ok=True)  # never write through a hard link into the run
        (folder / "README.md").write_text(render_model_card(self.run, spec, self.cfg.repo_id, folder))


def training_curves_png(log: list[dict[str, Any]]) -> bytes | None:
    """The report's training-curve figure (``fgvlm.report.figures.training_curves``) as PNG bytes."""
    if not log:
        return None
    from fgvlm.report.figures import training_curves

    uri = training_curves(log)
    return base64.b64decode(uri.split(",", 1)[1]) if uri else None


def _json(value: Any) -> str:
    import json

    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"
