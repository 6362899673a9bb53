"""The pieces ``objective: classify`` trains: the collator (``embed``'s inputs + labels) and the VLM + head module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fgvlm.models.chat import render_prompt
from fgvlm.sft.collator import check_chat_template, nested_images
from fgvlm.sft.objectives.base import VALIDATION_BATCH

if TYPE_CHECKING:
    from fgvlm.sft.data import InstructionRecord


class ClassifyCollator:
    """Records -> the processor batch of ``backend.embed`` (rendered prompt, left padding) + ``class_labels``."""

    def __init__(self, processor: Any, family: str, prompt: str, model_name: str = "the model"):
        check_chat_template(processor, family, model_name)
        self.processor = processor
        self.family = family
        self.nested = nested_images(family)
        self.prompt_text = render_prompt(processor, prompt, family=family)

    def __call__(self, records: list[InstructionRecord]) -> dict[str, Any]:
        images = [record.load_image() for record in records]
        images_arg = [[image] for image in images] if self.nested else images
        texts = [self.prompt_text] * len(records)
        batch = dict(
            self.processor(images=images_arg, text=texts, return_tensors="pt", padding=True, padding_side="left")
        )
        batch["class_labels"] = torch.tensor([record.label for record in records], dtype=torch.long)
        return batch


class ClassifyModel(nn.Module):
    """The VLM (possibly PEFT-wrapped; run through its backend) + a classification head on pooled features."""

    def __init__(self, vlm: nn.Module, head: nn.Module, backend: Any, pooling: str, layer: int):
        super().__init__()
        self.vlm = vlm
        self.head = head
        self.backend = backend  # not a submodule: it runs self.vlm's base model, whose parameters self.vlm holds
        self.pooling = pooling
        self.layer = layer

    def features(self, **inputs: Any) -> torch.Tensor:
        """Pooled hidden states ``[B, D]`` as ``backend.embed`` computes them, with gradients."""
        return self.backend.pooled_features(inputs, self.pooling, self.layer)

    def forward(self, class_labels: torch.Tensor | None = None, **inputs: Any) -> dict[str, torch.Tensor]:
        logits = self.head(self.features(**inputs).float())
        out = {"logits": logits}
        if class_labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, class_labels)
        return out


def feature_dim(backend: Any, collator: ClassifyCollator, record: InstructionRecord, layer: int) -> int:
    """Width of the pooled features (the language model's hidden size at ``layer``), from one forward."""
    batch = collator([record])
    batch.pop("class_labels")
    with torch.no_grad():
        return int(backend.pooled_features(backend.to_model(batch), "last", layer).shape[-1])


def classify_logits(
    model: ClassifyModel, collator: ClassifyCollator, records: list
) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's logits ``[N, C]`` and the labels ``[N]`` of ``records``, model in eval mode (restored after)."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        with torch.no_grad():
            for start in range(0, len(records), VALIDATION_BATCH):
                batch = collator(records[start : start + VALIDATION_BATCH])
                labels.append(batch.pop("class_labels"))
                logits.append(model(**model.backend.to_model(batch))["logits"].float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(labels)
