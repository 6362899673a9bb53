"""Idefics2: the processor takes one list of images per sample; record, backend and tiny recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fgvlm.models.backend import HFBackend
from fgvlm.models.families import FamilyRecord
from fgvlm.models.tiny.parts import Dims, chat_template, llama_text_config, vit_config
from fgvlm.models.tiny.tokenizer import train_bpe_tokenizer

if TYPE_CHECKING:
    from torch import nn
    from transformers import PreTrainedConfig, ProcessorMixin

IDEFICS_LORA_TARGETS = r"(.*\.)?text_model\.layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj"
"""The text model's attention and MLP projections (not SigLIP's or the perceiver's ``q_proj``...)."""

FAMILY = FamilyRecord(
    name="idefics2",
    model_types=("idefics2",),
    backend="fgvlm.models.families.idefics2:Idefics2Backend",
    tiny_recipe="fgvlm.models.families.idefics2:tiny_recipe",
    post_init="fgvlm.models.families.idefics2:post_init",
    stop_tokens=("</s>", "<end_of_utterance>"),
    template="idefics2.jinja",
    lora_target_modules=IDEFICS_LORA_TARGETS,
    vision_modules=("model.vision_model",),
    projector_modules=("model.connector",),
    language_modules=("model.text_model", "lm_head"),
    tiny_lr=1e-3,  # at 3e-3 the random perceiver's MLP drowns the image signal: training plateaus at chance
)


class Idefics2Backend(HFBackend):
    """Answers render as ``' name<end_of_utterance>'`` after ``Assistant:``; the template handles it."""

    family = "idefics2"
    nested_images = True


def tiny_recipe(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
    """Idefics2 (Mistral text model, SigLIP tower, perceiver resampler to 4 latents) at ``dims``."""
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


def post_init(model: nn.Module) -> None:
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
