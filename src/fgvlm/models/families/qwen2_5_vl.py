"""Qwen2.5-VL: the Qwen3-VL backend (same M-RoPE continuation), its record and tiny recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fgvlm.models.families import FamilyRecord
from fgvlm.models.families.qwen3_vl import QWEN_LORA_TARGETS, Qwen3VLBackend
from fgvlm.models.tiny.parts import Dims, chat_template, qwen_pixels, qwen_text_config, qwen_tokenizer, token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, ProcessorMixin

FAMILY = FamilyRecord(
    name="qwen2.5-vl",
    model_types=("qwen2_5_vl",),
    backend="fgvlm.models.families.qwen2_5_vl:Qwen25VLBackend",
    tiny_recipe="fgvlm.models.families.qwen2_5_vl:tiny_recipe",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    template="qwen2_5_vl.jinja",
    pixel_bounds=True,
    lora_target_modules=QWEN_LORA_TARGETS,
    vision_modules=("model.visual.patch_embed", "model.visual.blocks"),
    projector_modules=("model.visual.merger",),
    language_modules=("model.language_model", "lm_head"),
    like_shrink="fgvlm.models.tiny.like:shrink_qwen_vl",
    prompt_formats=("chat-template", "lmms-engine"),
    packing_positions="fgvlm.models.families.qwen3_vl:packed_positions",
)


class Qwen25VLBackend(Qwen3VLBackend):
    """Qwen3-VL's backend; the vision speed-ups find no Qwen3-VL modules here and change nothing."""

    family = "qwen2.5-vl"


def tiny_recipe(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
    """Qwen2.5-VL config + processor at ``dims``: patch 14, merge 2 (sides in multiples of 28), windowed vision."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = qwen_tokenizer()
    text = qwen_text_config(tokenizer, dims)
    vision = {
        "depth": dims.vision_layers,
        "hidden_size": dims.vision_hidden,
        "intermediate_size": dims.vision_hidden * 2,
        "num_heads": dims.vision_heads,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": dims.hidden,
        "window_size": 56,  # 2x2 merged patches per attention window
        "fullatt_block_indexes": [dims.vision_layers - 1],  # windowed attention, full attention in the last block
    }
    ids = token_ids(
        tokenizer,
        image_token_id="<|image_pad|>",
        video_token_id="<|video_pad|>",
        vision_start_token_id="<|vision_start|>",
        vision_end_token_id="<|vision_end|>",
    )
    config = Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
    pixels = qwen_pixels(dims, factor=28)
    clip = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    common = {"patch_size": 14, "temporal_patch_size": 2, "merge_size": 2, **clip}
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, **common),
        video_processor=Qwen2VLVideoProcessor(
            size={"shortest_edge": pixels["shortest_edge"], "longest_edge": 4 * pixels["longest_edge"]}, **common
        ),
        tokenizer=tokenizer,
        chat_template=chat_template("qwen2.5-vl"),
    )
    return config, processor
