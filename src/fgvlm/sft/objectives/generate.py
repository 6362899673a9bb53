"""``objective: generate``: teacher-forced answers, the loss on the answer tokens only (the reference recipe).

Batches come from ``SFTCollator`` (padded, or packed padding-free with ``packing: true`` where the family's record
gives packed positions); the loss is ``fgvlm.sft.trainer.answer_loss``: the weighted mean NLL of the answer tokens,
with the MixUp/CutMix rules of ``mixcut.loss`` (``lambda-nll``: lambda * NLL(a) + (1 - lambda) * NLL(b) on the same
mixed image; ``dominant``; ``both-names``) carried by the collator as per-sequence loss weights. Validation and the
final evaluation are the defaults: the eval task ranked.
"""

from __future__ import annotations

from typing import Any

from fgvlm.sft.objectives.base import Objective


class GenerateObjective(Objective):
    name = "generate"
    packing = True
    collator_checks_lengths = True

    def loss(self, model: Any, inputs: dict[str, Any]) -> Any:
        from fgvlm.sft.trainer import answer_loss

        return answer_loss(model, inputs, self.setup.encoder_decoder)
