"""``objective: classify``: a linear head on pooled hidden states, trained jointly with the VLM (LoRA or full).

One forward per image, no generation: the image + question are encoded exactly as ``backend.embed`` encodes them
(the chat-templated prompt, left padding), the features are the backend's ``pooled_features`` (what ``embed``
returns, with gradients: mean over real tokens by default, image-mean, or last, of ``layer``), and the head (the
heads' ``ClassificationHead``: Dropout + Linear) gives class logits trained by cross-entropy. So the saved model + head
are used unchanged by ``fgvlm predict --model RUN/model --head RUN`` and ``fgvlm head eval --run RUN/head``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fgvlm.models.chat import render_prompt
from fgvlm.sft.collator import check_chat_template, nested_images
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


def pool_hidden(backend: Any, inputs: dict[str, Any], hidden: torch.Tensor, pooling: str) -> torch.Tensor:
    """``backend.embed``'s pooling, differentiable: last position, mean over the attention mask, or image tokens."""
    return backend.pool(inputs, hidden, pooling)


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


def classify_accuracy(model: ClassifyModel, collator: ClassifyCollator, records: list, batch_size: int = 8) -> dict:
    """Top-1 and top-5 accuracy of the head on ``records``, model in eval mode (restored afterwards)."""
    was_training = model.training
    model.eval()
    correct = top5 = 0
    try:
        with torch.no_grad():
            for start in range(0, len(records), batch_size):
                batch = collator(records[start : start + batch_size])
                labels = batch.pop("class_labels")
                logits = model(**model.backend.to_model(batch))["logits"].cpu()
                correct += int((logits.argmax(dim=1) == labels).sum())
                k = min(5, logits.shape[1])
                top5 += int((logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1).sum())
    finally:
        model.train(was_training)
    n = max(1, len(records))
    return {"val_accuracy": correct / n, "val_top5": top5 / n}
