"""One recipe per VLM family: the family's own config, tokenizer and processor classes at toy sizes.

Each recipe returns ``(config, processor)`` built from the same classes a real checkpoint of the family uses, so
a tiny model saves and loads through ``AutoProcessor`` + ``AutoModelForImageTextToText`` exactly like the real
one. Sizes follow the family's arithmetic (see the comments): Qwen image sides are multiples of patch x merge,
Idefics2's ``image_seq_len`` equals the resampler's latents, SmolVLM's is ``(image_size / patch)^2 / scale^2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from fgvlm.models.tiny.tokenizer import train_bpe_tokenizer, train_wordpiece_tokenizer

if TYPE_CHECKING:
    from torch import nn
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


def chat_template(name: str) -> str:
    """A family's chat template, kept as a data file in ``fgvlm/models/templates``."""
    return resources.files("fgvlm.models").joinpath("templates", f"{name}.jinja").read_text()


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


def qwen3_vl(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
    from transformers import Qwen2VLImageProcessor, Qwen3VLConfig, Qwen3VLProcessor, Qwen3VLVideoProcessor

    tokenizer = qwen_tokenizer()
    text = qwen_text_config(tokenizer, dims)
    text["head_dim"] = dims.head_dim  # Qwen3's default is 128 whatever the width
    text["rope_parameters"]["mrope_interleaved"] = True
    vision = {
        "depth": dims.vision_layers,
        "hidden_size": dims.vision_hidden,
        "intermediate_size": dims.vision_hidden * 2,
        "num_heads": dims.vision_heads,
        "patch_size": 16,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "out_hidden_size": dims.hidden,
        "num_position_embeddings": 256,  # a 16x16 grid, interpolated per image
        "deepstack_visual_indexes": list(range(dims.vision_layers - 1)),  # every layer but the last, as 8/16/24 of 27
    }
    ids = token_ids(
        tokenizer,
        image_token_id="<|image_pad|>",
        video_token_id="<|video_pad|>",
        vision_start_token_id="<|vision_start|>",
        vision_end_token_id="<|vision_end|>",
    )
    config = Qwen3VLConfig(text_config=text, vision_config=vision, **ids)
    pixels = qwen_pixels(dims, factor=32)
    common = {
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5] * 3,
        "image_std": [0.5] * 3,
    }
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=pixels, **common),
        video_processor=Qwen3VLVideoProcessor(
            size={"shortest_edge": pixels["shortest_edge"], "longest_edge": 4 * pixels["longest_edge"]}, **common
        ),
        tokenizer=tokenizer,
        chat_template=chat_template("qwen3_vl"),
    )
    return config, processor


def qwen2_5_vl(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
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
        chat_template=chat_template("qwen2_5_vl"),
    )
    return config, processor


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


def idefics2(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
    from transformers import Idefics2Config, Idefics2ImageProcessor, Idefics2Processor

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    tokenizer = train_bpe_tokenizer(
        specials,
        bos="<s>",
        eos="</s>",
        pad="<pad>",
        unk="<unk>",
        add_bos=True,
        extra_special_tokens={"image_token": "<image>", "image_boundary_token": "<fake_token_around_image>"},
    )
    latents = 4  # the perceiver resamples every image to this many tokens; the processor must insert as many
    config = Idefics2Config(
        text_config=llama_text_config(tokenizer, dims, model_type="mistral"),
        vision_config=vit_config(dims, image_size=64, patch_size=16),
        perceiver_config={
            "hidden_size": dims.hidden,
            "rms_norm_eps": 1e-5,
            "resampler_n_latents": latents,
            "resampler_depth": 1,
            "resampler_n_heads": 2,
            "resampler_head_dim": 16,
            "num_key_value_heads": 1,
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    image_processor = Idefics2ImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}, do_image_splitting=False)
    processor = Idefics2Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=latents,
        chat_template=chat_template("idefics2"),
    )
    return config, processor


IDEFICS2_CONNECTOR_STD = 0.2
"""Init std of the tiny Idefics2 connector (modality projection + perceiver). At the text model's 0.02 the
perceiver's attention adds ~2% of image signal to its latents, and the language model sees almost the same four
tokens for every image (rank scores moved by ~5e-4, same generations); at 0.2 the image part is ~as large as the
latents'."""


def idefics2_init(model: nn.Module) -> None:
    """Re-draw the image path that random init leaves blind (Idefics2 initialises its latents to ones).

    Latents ~ N(0, 1), so the four image tokens differ from each other, and every connector weight
    ~ N(0, ``IDEFICS2_CONNECTOR_STD``), so they differ from image to image. Draws from torch's global RNG:
    ``build_tiny_model`` calls this under its seeded, forked RNG, so the same seed gives the same weights.
    """
    import torch

    connector = model.model.connector
    with torch.no_grad():
        latents = connector.perceiver_resampler.latents
        latents.copy_(torch.randn(latents.shape))
        for module in connector.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, IDEFICS2_CONNECTOR_STD)


def smolvlm(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
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


def instructblip_init(model: nn.Module) -> None:
    """Draw the query tokens ~ N(0, Q-Former initializer_range), as BLIP-2 pretraining does.

    Transformers zero-initialises them (they always come from a checkpoint), which makes the four query tokens,
    and so the four image tokens the language model sees, identical. Draws from torch's global RNG (seeded by
    ``build_tiny_model``).
    """
    import torch

    with torch.no_grad():
        tokens = model.query_tokens
        tokens.normal_(0.0, model.config.qformer_config.initializer_range)


def instructblip_t5(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
    """InstructBLIP with an encoder-decoder Flan-T5 language model (as Salesforce/instructblip-flan-t5-xl)."""
    tokenizer = train_bpe_tokenizer(
        ["<pad>", "</s>", "<unk>", "<image>"], eos="</s>", pad="<pad>", unk="<unk>", add_eos=True
    )
    text = {
        "model_type": "t5",
        "vocab_size": len(tokenizer),
        "d_model": dims.hidden,
        "d_kv": dims.head_dim,
        "d_ff": dims.hidden * 2,
        "num_layers": dims.layers,
        "num_decoder_layers": dims.layers,
        "num_heads": dims.heads,
        "feed_forward_proj": "gated-gelu",
        "tie_word_embeddings": False,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "decoder_start_token_id": tokenizer.pad_token_id,
    }
    return instructblip_parts(tokenizer, text, dims)


def instructblip(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
    """InstructBLIP with a decoder-only Llama language model (as Salesforce/instructblip-vicuna-7b)."""
    tokenizer = train_bpe_tokenizer(
        ["<unk>", "<s>", "</s>", "<pad>", "<image>"], bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", add_bos=True
    )
    return instructblip_parts(tokenizer, llama_text_config(tokenizer, dims), dims)
