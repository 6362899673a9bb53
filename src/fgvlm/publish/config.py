"""``PublishConfig``: every option of ``fgvlm publish`` (YAML < flags < ``--set``), saved as the publish run's config.

There is deliberately no token here: the Hub token comes from the environment (``HF_TOKEN``) or from
``hf auth login`` (``huggingface-cli login``), never from a config file that could be shared or committed.
"""

from __future__ import annotations

import dataclasses
import re

from fgvlm.config import ConfigError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
"""``ORG/NAME`` as the Hub accepts it (letters, digits, '-', '_', '.')."""


@dataclasses.dataclass
class PublishConfig:
    """What to publish, where, and how (``fgvlm publish``; study rows of ``kind: publish``)."""

    source: str = ""
    """A finished run directory (sft, rl, head train, cnn train), or a ``fgvlm prompts build`` file or folder."""
    repo_id: str = ""
    """The Hub repository, ``ORG/NAME`` (created when missing)."""
    dataset: bool = False
    """Publish instruction data as a dataset repository (``source`` is a prompts build file or folder)."""
    private: bool = False
    """Create the repository as private (an existing repository keeps its visibility)."""
    revision: str | None = None
    """Branch to commit to (created from main when missing); None = main."""
    dry_run: bool = False
    """Only write the folder that would be uploaded (``OUT/upload``) and list its files; no network."""
    adapter: bool = False
    """LoRA runs: also upload the adapter alone (``adapter/``, loadable with ``peft.PeftModel.from_pretrained``)."""
    license: str | None = None
    """Licence of the repository (a Hub licence id such as apache-2.0); None = the base model's, when known."""
    base_model: str | None = None
    """Hub id of the base model when the run's base is a local folder (e.g. a head on a published fine-tuned
    model); None = taken from the run (a registry name's hub id, or the hub id it was given)."""
    datasets: list[str] | None = None
    """Hub ids of the training data for the card's ``datasets`` (e.g. a published instruction set); None = the
    run's dataset."""
    limit: int | None = None
    """Instruction data: only the first N records of each file (quick checks). A model is published whole (a
    study's ``*.limit`` reaches publish rows too: it is noted, not an error)."""
    resume: bool = True
    """Reuse a staged folder and find a commit already made by an earlier attempt (off: start over)."""

    def __post_init__(self) -> None:
        if not self.source:
            raise ConfigError("source: give the run directory or instruction file to publish")
        if not REPO_ID.match(self.repo_id or ""):
            raise ConfigError(f"repo_id must be ORG/NAME (letters, digits, '-', '_', '.'), got {self.repo_id!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1 (or unset), got {self.limit}")
        if self.revision is not None and not re.match(r"^[\w./-]+$", self.revision):
            raise ConfigError(f"revision must be a branch name, got {self.revision!r}")
