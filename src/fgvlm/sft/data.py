"""Instruction records for fine-tuning, from ``fgvlm.prompts.instructions`` (the builder ``fgvlm prompts build``
exports with, so what is exported is what is trained).

``instruction_records`` maps an ``SFTConfig`` onto ``build_instructions``: the task or mixture, the per-task
options, the MixUp/CutMix settings of MixUp/CutMix (``-mixcut`` tasks), the model family's wording (so the questions are
byte-identical to the ones ``fgvlm eval`` asks that model) and the seed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fgvlm.prompts.instructions import InstructionRecord, build_instructions

if TYPE_CHECKING:
    from fgvlm.data.base import Dataset
    from fgvlm.sft.config import SFTConfig

__all__ = ["InstructionRecord", "instruction_records"]


def instruction_records(
    cfg: SFTConfig,
    dataset: Dataset,
    split: str,
    family: str | None,
    limit: int | None = None,
    out_dir: str | Path | None = None,
) -> list[InstructionRecord]:
    """Records of the first ``limit`` images of ``split`` (all when None) for the config's task or mixture.

    ``out_dir``: where mixed (and drawn) images are written as PNG files; None keeps them in memory.
    """
    return build_instructions(
        dataset,
        split,
        cfg.tasks,
        cfg.seed,
        out_dir,
        mixcut=cfg.mixcut,
        family=family,
        task_options=cfg.task_options,
        limit=limit,
    )
