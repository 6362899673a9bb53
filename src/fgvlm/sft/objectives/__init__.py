"""Training objectives of ``fgvlm sft``: one class per objective, chosen from ``OBJECTIVES`` by name.

An objective is what differs between ways of fine-tuning the same model on the same data (STYLE.md, "one home per
training objective"): how records become a batch, the loss, the validation score, the final evaluation and the extra
files it writes. The run around it (``fgvlm.sft.run``: lifecycle, resume, checkpoints, best/last, ``RUN/model``,
``done.json``) is shared and never asks which objective it runs. Adding an objective = one class (a subclass of
``fgvlm.sft.objectives.base.Objective``) + one entry here.

Entries are ``"module:Class"`` strings, so importing this package (the config does, to validate names) loads no torch.
"""

from __future__ import annotations

from typing import Any

from fgvlm.registry import import_object

OBJECTIVES: dict[str, str] = {
    "generate": "fgvlm.sft.objectives.generate:GenerateObjective",
    "classify": "fgvlm.sft.objectives.classify:ClassifyObjective",
    "rank": "fgvlm.sft.objectives.rank:RankObjective",
}
"""Objective name (``objective:`` in a config or study row) -> its class."""


def objective_names() -> list[str]:
    return list(OBJECTIVES)


def objective_class(name: str) -> Any:
    """The class of objective ``name`` (a ``ConfigError`` lists the known ones)."""
    from fgvlm.registry import unknown_name

    if name not in OBJECTIVES:
        raise unknown_name("objective", name, objective_names())
    return import_object(OBJECTIVES[name])
