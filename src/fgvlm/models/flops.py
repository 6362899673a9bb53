"""Counted FLOPs of a VLM: its parameters split by part, and the 2N (forward) / 6N (training) rule over tokens.

One counting for runs and benchmarks: the forward rule in the ``cost`` block of every run's ``metrics.json``, the
training rule in ``benchmarks/bench_sft.py`` and ``gpu_sft.py`` (a fine-tuning run's block does not count its
training steps yet). A VLM is split into the language model ``N_lm`` (without the token embedding, a lookup,
and without the LM head), the LM head ``N_head`` (counted even when tied to the embedding: its matmul runs), and
the vision tower with its projector ``N_vision`` (the family record's parameter prefixes). A forward costs
``2·N`` FLOPs per token through a part, a training step ``6·N`` (forward + backward); attention-score FLOPs are
not counted (the usual rule, a few % at these lengths). ``ModelUsage`` is what a backend counts as it runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

VLM_FORWARD_RULE = (
    "2·N_lm·T + 2·N_head·H + 2·N_vision·P: T tokens through the language model (prompts with their image "
    "tokens, generated and ranked-answer tokens; pads not counted), H positions whose LM-head logits are computed, "
    "P vision patches; N_lm = language-model parameters without the token embedding and the LM head, N_head = the "
    "LM head's, N_vision = the vision tower's and projector's; attention-score FLOPs not counted"
)
VLM_TRAIN_RULE = (
    "6·N_lm·T + 6·N_head·A + 2·N_vision·P per training step (6·N_vision·P when the vision tower trains): T real "
    "tokens (pads not counted), A answer positions the LM head runs on, P vision patches; N as in the forward rule"
)
IGNORE_INDEX = -100


@dataclasses.dataclass
class ModelUsage:
    """What a backend ran through its model, counted as it runs (a snapshot ``copy()``; ``since`` the difference)."""

    prompt_tokens: int = 0
    """Real (unpadded) input tokens of every forward: prompts with their image tokens, ranked answers' tokens."""
    generated_tokens: int = 0
    """Tokens generated (pads after an answer's end not counted)."""
    head_positions: int = 0
    """Positions whose LM-head logits were computed."""
    vision_patches: int = 0
    """Patches through the vision tower."""

    def copy(self) -> ModelUsage:
        return dataclasses.replace(self)

    def add_inputs(self, batch: dict[str, Any], patch_size: int | None) -> None:
        """Count a processor batch about to run: its real tokens and its vision patches."""
        mask = batch.get("attention_mask")
        self.prompt_tokens += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        self.vision_patches += count_patches(batch.get("pixel_values"), patch_size)

    def since(self, earlier: ModelUsage | None) -> ModelUsage:
        """The usage added after the ``earlier`` snapshot (all of it when None)."""
        if earlier is None:
            return self.copy()
        fields = dataclasses.fields(self)
        return ModelUsage(**{f.name: getattr(self, f.name) - getattr(earlier, f.name) for f in fields})


def parameter_counts(model: Any, family: Any = None) -> dict[str, int]:
    """``{"lm", "head", "vision", "embedding"}`` parameter counts of a VLM (a PEFT wrapper is looked through).

    ``family`` (a ``FamilyRecord``) tells the vision tower and projector apart by parameter prefix; without it
    everything but the embedding and the head counts as language model.
    """
    from fgvlm.models.helpers import unwrap_model

    model = unwrap_model(model)
    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    embedding_ids = {id(p) for p in embedding.parameters()} if embedding is not None else set()
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    counts = {"lm": 0, "head": sum(p.numel() for p in head.parameters()) if head is not None else 0, "vision": 0}
    counts["embedding"] = sum(p.numel() for p in embedding.parameters()) if embedding is not None else 0
    for name, parameter in model.named_parameters():  # tied parameters are listed once
        if id(parameter) in embedding_ids or id(parameter) in head_ids:
            continue
        part = family.part_of(name) if family is not None else None
        counts["vision" if part in ("vision", "projector") else "lm"] += parameter.numel()
    return counts


def vision_patch_size(model: Any) -> int | None:
    """The vision tower's patch side in pixels, from the model config (None when it has none)."""
    config = getattr(model, "config", None)
    return getattr(getattr(config, "vision_config", None), "patch_size", None)


def count_patches(pixel_values: Any, patch_size: int | None) -> int:
    """Vision patches in a processor's ``pixel_values``: rows of Qwen-style flattened patches ``[P, D]``, else the
    pixels of ``[..., C, H, W]`` images over the patch area."""
    if pixel_values is None:
        return 0
    if pixel_values.ndim == 2:
        return int(pixel_values.shape[0])
    if not patch_size:
        return 0
    return int(pixel_values.numel() // (pixel_values.shape[-3] * patch_size * patch_size))


def batch_counts(batch: dict[str, Any], patch_size: int | None = None) -> dict[str, int]:
    """Real tokens (pads excluded), answer positions (labels not ignored, after the shift) and vision patches of one
    collated training batch: the ``T``, ``A`` and ``P`` of ``VLM_TRAIN_RULE``."""
    mask = batch.get("attention_mask")
    labels = batch.get("labels")
    return {
        "tokens": int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()),
        "answers": int((labels[:, 1:] != IGNORE_INDEX).sum()) if labels is not None else 0,
        "patches": count_patches(batch.get("pixel_values"), patch_size),
    }


def forward_flops(counts: dict[str, int], usage: ModelUsage) -> float:
    """``VLM_FORWARD_RULE`` for what a backend ran."""
    tokens = usage.prompt_tokens + usage.generated_tokens
    head, vision = counts["head"] * usage.head_positions, counts["vision"] * usage.vision_patches
    return float(2 * counts["lm"] * tokens + 2 * head + 2 * vision)


def train_flops(
    counts: dict[str, int], tokens: int, answers: int, patches: int, *, vision_trained: bool = False
) -> float:
    """``VLM_TRAIN_RULE`` for one step (or a sum of steps) of ``tokens`` / ``answers`` / ``patches``."""
    vision = (6 if vision_trained else 2) * counts["vision"] * patches
    return float(6 * counts["lm"] * tokens + 6 * counts["head"] * answers + vision)
