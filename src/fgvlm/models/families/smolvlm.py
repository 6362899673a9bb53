"""SmolVLM (Idefics3-style): record, backend and tiny recipe; image splitting is the processor's business."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fgvlm.models.backend import HFBackend
from fgvlm.models.families import FamilyRecord
from fgvlm.models.families.idefics2 import IDEFICS_LORA_TARGETS
from fgvlm.models.tiny.parts import QWEN_SPECIALS, Dims, chat_template, llama_text_config, vit_config
from fgvlm.models.tiny.tokenizer import train_bpe_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, ProcessorMixin

SMOLVLM_VISION_TOKENS = (
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)),
)
"""The image placeholder, its boundary, the global-view and tile-position markers: never sampled in an RL rollout."""

FAMILY = FamilyRecord(
    name="smolvlm",
    model_types=("smolvlm", "idefics3"),  # HuggingFaceTB/SmolVLM-Instruct is an Idefics3 checkpoint
    backend="fgvlm.models.families.smolvlm:SmolVLMBackend",
    tiny_recipe="fgvlm.models.families.smolvlm:tiny_recipe",
    template="smolvlm.jinja",
    lora_target_modules=IDEFICS_LORA_TARGETS,
    vision_modules=("model.vision_model",),
    projector_modules=("model.connector",),
    language_modules=("model.text_model", "lm_head"),
    never_sample=SMOLVLM_VISION_TOKENS,
)


class SmolVLMBackend(HFBackend):
    """Idefics3-style model; image splitting (``<row_r_col_c>`` tiles) is the processor's business."""

    family = "smolvlm"
    nested_images = True
    packed_rank = True


def tiny_recipe(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
    """SmolVLM (Llama text model, SigLIP tower, pixel-shuffle connector, 64-px tiles) at ``dims``."""
    from transformers import SmolVLMConfig, SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    grid = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    specials = [*QWEN_SPECIALS, "<fake_token_around_image>", "<image>", "<global-img>", "<end_of_utterance>", *grid]
    tokenizer = train_bpe_tokenizer(
        specials, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>", unk="<|endoftext|>"
    )
    tile, patch, scale = 64, 16, 2
    image_seq_len = (tile // patch) ** 2 // scale**2  # tokens per tile after pixel shuffle: (64/16)^2 / 2^2 = 4
    config = SmolVLMConfig(
        text_config=llama_text_config(tokenizer, dims),
        vision_config=vit_config(dims, image_size=tile, patch_size=patch),
        scale_factor=scale,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=tokenizer.pad_token_id,
    )
    # Images are split into up to 2x2 tiles of 64 px plus a global 64-px view, as SmolVLM does at 512/4x512 px.
    image_processor = SmolVLMImageProcessor(size={"longest_edge": 2 * tile}, max_image_size={"longest_edge": tile})
    video_processor = SmolVLMVideoProcessor(size={"longest_edge": tile}, max_image_size={"longest_edge": tile})
    processor = SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_processor,
        image_seq_len=image_seq_len,
        chat_template=chat_template("smolvlm"),
    )
    return config, processor
