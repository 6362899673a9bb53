"""InstructBLIP with a decoder-only (OPT/Llama/Vicuna) language model: record, backend and tiny recipe.

The processor puts the Q-Former's query ``<image>`` tokens in front of the prompt, outside the padding, so a batch of
different-length prompts does not generate like one-at-a-time (identical prompts do). The model's own outputs
nest the language model's under ``language_model_outputs``; text-only prompts (the ranking prior) run the
language model alone, since the full model needs pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fgvlm.models.backend import HFBackend, Prefix, forward_takes_logits_to_keep, unwrap_model
from fgvlm.models.families import FamilyRecord
from fgvlm.models.tiny.parts import Dims, instructblip_parts, llama_text_config
from fgvlm.models.tiny.tokenizer import train_bpe_tokenizer

if TYPE_CHECKING:
    from PIL import Image
    from torch import nn
    from transformers import PreTrainedConfig, ProcessorMixin

FAMILY = FamilyRecord(
    name="instructblip",
    model_types=("instructblip",),
    backend="fgvlm.models.families.instructblip:InstructBlipBackend",
    tiny_recipe="fgvlm.models.families.instructblip:tiny_recipe",
    post_init="fgvlm.models.families.instructblip:post_init",
    template="instructblip.jinja",
    lora_target_modules=r"(.*\.)?language_model\.model\.layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj",
    vision_modules=("vision_model",),
    projector_modules=("query_tokens", "qformer", "language_projection"),
    language_modules=("language_model",),
    never_sample=("<image>",),
)


class InstructBlipBackend(HFBackend):
    """Decoder-only language model: the cached prefix is the query tokens + prompt."""

    family = "instructblip"
    packed_rank = True
    # Continuation positions: the default (cache index). A rank batch never pads here (one prompt per batch, the same
    # number of query tokens for every image), so it also holds for a decoder numbering tokens from the mask (OPT).

    def _forward(self, inputs: dict[str, Any], **kwargs: Any) -> Any:
        if "pixel_values" in inputs:
            return self.model(**inputs, **kwargs).language_model_outputs
        return self.language_model(**inputs, **kwargs)

    @property
    def language_model(self) -> Any:
        """The wrapped language model, reached through the unwrapped model (PEFT-safe)."""
        return unwrap_model(self.model).language_model

    def _text_module(self, prefix: Prefix) -> Any:
        return self.language_model

    def _last_logits_only(self, inputs: dict[str, Any]) -> dict[str, Any]:
        # The full model's forward has no logits_to_keep; its language model (Llama/OPT) does, T5 does not.
        module = unwrap_model(self.model) if "pixel_values" in inputs else self.language_model
        return {"logits_to_keep": 1} if forward_takes_logits_to_keep(type(module)) else {}

    def _encode_answered(self, images: list[Image.Image] | None, prompt_text: str, suffix: str) -> dict[str, Any]:
        # The Q-Former reads the instruction only, never the answer: keep the prompt's Q-Former tokens.
        inputs = super()._encode_answered(images, prompt_text, suffix)
        if images is not None:
            prompt_inputs = self.encode(images, [prompt_text])
            for key in ("qformer_input_ids", "qformer_attention_mask"):
                inputs[key] = prompt_inputs[key]
        return inputs


def post_init(model: nn.Module) -> None:
    """Draw the query tokens ~ N(0, Q-Former initializer_range), as BLIP-2 pretraining does.

    Transformers zero-initialises them (they always come from a checkpoint), which makes the four query tokens,
    and so the four image tokens the language model sees, identical. Draws from torch's global RNG (seeded by
    ``build_tiny_model``).
    """
    import torch

    with torch.no_grad():
        tokens = model.query_tokens
        tokens.normal_(0.0, model.config.qformer_config.initializer_range)


def tiny_recipe(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
    """InstructBLIP with a decoder-only Llama language model (as Salesforce/instructblip-vicuna-7b)."""
    tokenizer = train_bpe_tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", add_bos=True
    )
    return instructblip_parts(tokenizer, llama_text_config(tokenizer, dims), dims)
