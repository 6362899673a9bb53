"""Building blocks the tiny recipes share: sizes, tokenizers and the text/vision configs several families use.

Each family's recipe lives in its family file (``fgvlm/models/families/<family>.py``) and returns
``(config, processor)`` built from the same classes a real checkpoint of the family uses, so a tiny model saves and
loads through ``AutoProcessor`` + ``AutoModelForImageTextToText`` exactly like the real one. Sizes follow the
family's arithmetic: Qwen image sides are multiples of patch x merge, Idefics2's ``image_seq_len`` equals the
resampler's latents, SmolVLM's is ``(image_size / patch)^2 / scale^2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fgvlm.models.tiny.tokenizer import train_bpe_tokenizer, train_wordpiece_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedConfig, ProcessorMixin


@dataclass(frozen=True)
class Dims:
    """Width and depth of the language model and of the vision tower."""

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


TINY = Dims()
# ~27 M params (most of it the 512-wide text model); 224-px images give ~50-80 prefix tokens.
SMALL = Dims(hidden=512, layers=4, heads=8, kv_heads=4, vision_hidden=384, vision_layers=4, vision_heads=6)

QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def chat_template(family: str) -> str:
    """The chat template file named by ``family``'s record (``fgvlm/models/templates``)."""
    from fgvlm.models.families import get_family, read_template

    template = get_family(family).template
    if template is None:
        raise ValueError(f"family {family!r} names no chat template file")
    return read_template(template)


def token_ids(tokenizer: Any, **tokens: str) -> dict[str, int]:
    return {key: tokenizer.convert_tokens_to_ids(token) for key, token in tokens.items()}


def qwen_tokenizer() -> Any:
    return train_bpe_tokenizer(QWEN_SPECIALS, eos="<|im_end|>", pad="<|endoftext|>")


def qwen_text_config(tokenizer: Any, dims: Dims) -> dict[str, Any]:
    """Text config shared by Qwen3-VL and Qwen2.5-VL: M-RoPE sections must sum to head_dim / 2."""
    quarter = dims.head_dim // 4  # [t, h, w] = [1/4, 1/8, 1/8] of head_dim, as [24, 20, 20]-ish for head_dim 128
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": dims.hidden,
        "intermediate_size": dims.hidden * 2,
        "num_hidden_layers": dims.layers,
        "num_attention_heads": dims.heads,
        "num_key_value_heads": dims.kv_heads,
        "max_position_embeddings": 4096,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "bos_token_id": None,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 1_000_000.0,
            "mrope_section": [quarter, quarter // 2, quarter // 2],
        },
    }


def qwen_pixels(dims: Dims, factor: int) -> dict[str, int]:
    """Pixel bounds: tiny models see ~6 image tokens, small ones a 224-px image (~49-64 tokens)."""
    side = 224 if dims is SMALL else 3 * factor
    return {"shortest_edge": (2 * factor) ** 2, "longest_edge": side * side}


def llama_text_config(tokenizer: Any, dims: Dims, model_type: str = "llama") -> dict[str, Any]:
    """A decoder-only Llama/Mistral text config (Idefics2, SmolVLM, InstructBLIP-Vicuna)."""
    return {
        "model_type": model_type,
        "vocab_size": len(tokenizer),
        "hidden_size": dims.hidden,
        "intermediate_size": dims.hidden * 2,
        "num_hidden_layers": dims.layers,
        "num_attention_heads": dims.heads,
        "num_key_value_heads": dims.kv_heads,
        "max_position_embeddings": 4096,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def vit_config(dims: Dims, image_size: int, patch_size: int) -> dict[str, Any]:
    """A ViT vision tower config (SigLIP for Idefics2/SmolVLM, EVA-CLIP for InstructBLIP) at ``dims``' width."""
    return {
        "hidden_size": dims.vision_hidden,
        "intermediate_size": dims.vision_hidden * 2,
        "num_hidden_layers": dims.vision_layers,
        "num_attention_heads": dims.vision_heads,
        "image_size": image_size,
        "patch_size": patch_size,
    }


QFORMER_STD = 0.1
"""Init std of the tiny Q-Former's weights and query tokens (the text model and projection keep 0.02)."""


def instructblip_parts(tokenizer: Any, text: dict[str, Any], dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
    """Vision tower + Q-Former (with its own uncased WordPiece tokenizer) in front of the given language model."""
    from transformers import BlipImageProcessor, InstructBlipConfig, InstructBlipProcessor

    qformer_tokenizer = train_wordpiece_tokenizer()
    queries = 4  # query tokens the Q-Former hands to the language model, placed before the prompt
    # InstructBLIP's vision config defaults to initializer_range=1e-10 (real weights always come from a
    # checkpoint): the random tower then outputs ~1e-9, which its LayerNorms (eps 1e-6) flatten to ~0 for any image.
    vision = {**vit_config(dims, image_size=32, patch_size=16), "initializer_range": 0.02}
    config = InstructBlipConfig(
        vision_config=vision,
        qformer_config={
            "vocab_size": len(qformer_tokenizer),
            "hidden_size": dims.vision_hidden,
            "num_hidden_layers": 2,
            "num_attention_heads": dims.vision_heads,
            "intermediate_size": dims.vision_hidden * 2,
            "encoder_hidden_size": dims.vision_hidden,
            "cross_attention_frequency": 1,
            "pad_token_id": qformer_tokenizer.pad_token_id,
            # At 0.02 the cross-attention adds ~1% of image signal to the unit-scale queries; see instructblip_init.
            "initializer_range": QFORMER_STD,
        },
        text_config=text,
        num_query_tokens=queries,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    clip = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    image_processor = BlipImageProcessor(size={"height": 32, "width": 32}, **clip)
    # The processor keeps no chat template of its own on reload: the tokenizer carries it. The processor adds
    # ``<image>`` itself when the tokenizer has no ``image_token`` attribute, as with the real checkpoints.
    tokenizer.chat_template = chat_template("instructblip")
    processor = InstructBlipProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=queries,
    )
    return config, processor
