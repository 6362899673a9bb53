"""Qwen3-VL: multimodal RoPE (M-RoPE) positions for continuations after a cached prefix; record and tiny recipe.

Qwen3-VL's vision tower also gets two CPU speed-ups that compute the same function as transformers' code (pinned by
``tests/test_backends.py``): the patch embedding, a ``Conv3d`` whose kernel equals its stride over pre-cut patches,
runs as the equivalent matmul; and vision self-attention runs ONE batched SDPA call when every image has the same
number of patches, instead of one call per image.
"""

from __future__ import annotations

import types
from typing import TYPE_CHECKING, Any

from fgvlm.models.backend import HFBackend, Prefix, unwrap_model
from fgvlm.models.families import FamilyRecord
from fgvlm.models.tiny.parts import Dims, chat_template, qwen_pixels, qwen_text_config, qwen_tokenizer, token_ids

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedConfig, ProcessorMixin

QWEN_LORA_TARGETS = r"(.*\.)?language_model\.layers\.\d+\.(self_attn|mlp)\.(q|k|v|o|gate|up|down)_proj"
"""The Qwen language model's attention and MLP projections (not the vision tower's ``qkv``/``proj``/``linear_fc``)."""

FAMILY = FamilyRecord(
    name="qwen3-vl",
    model_types=("qwen3_vl",),
    backend="fgvlm.models.families.qwen3_vl:Qwen3VLBackend",
    tiny_recipe="fgvlm.models.families.qwen3_vl:tiny_recipe",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    template="qwen3_vl.jinja",
    pixel_bounds=True,
    lora_target_modules=QWEN_LORA_TARGETS,
    vision_modules=("model.visual.patch_embed", "model.visual.pos_embed", "model.visual.blocks"),
    projector_modules=("model.visual.merger", "model.visual.deepstack_merger_list"),
    language_modules=("model.language_model", "lm_head"),
    tiny_sizes=("tiny", "small"),
    like_shrink="fgvlm.models.tiny.like:shrink_qwen_vl",
    prompt_formats=("chat-template", "lmms-engine"),
    packing_positions="fgvlm.models.families.qwen3_vl:packed_positions",
)


def _patch_embed_as_matmul(self: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    """``Qwen3VLVisionPatchEmbed.forward`` as ``x @ W.T + b``: each row of ``hidden_states`` is one flattened
    ``(channels, time, height, width)`` patch, exactly what the convolution's kernel covers."""
    import torch

    weight = self.proj.weight.reshape(self.embed_dim, -1)
    return torch.nn.functional.linear(hidden_states.to(weight.dtype), weight, self.proj.bias)


def _vision_attention_batched(
    self: Any,
    hidden_states: torch.Tensor,
    cu_seqlens: torch.Tensor,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    max_seqlen: int | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """``Qwen3VLVisionAttention.forward`` with the images' equal-length segments stacked as one SDPA batch.

    Falls back to the original forward (kept as ``self._fgvlm_original_forward``) for anything else: images of
    different sizes, another attention implementation, training, or when attention weights are requested.
    """
    import torch
    from transformers.models.qwen3_vl.modeling_qwen3_vl import apply_rotary_pos_emb_vision

    lengths = cu_seqlens[1:] - cu_seqlens[:-1]
    if (
        self.training
        or self.config._attn_implementation != "sdpa"
        or kwargs.get("output_attentions")
        or not bool((lengths == lengths[0]).all())
    ):
        return self._fgvlm_original_forward(
            hidden_states, cu_seqlens, position_embeddings=position_embeddings, max_seqlen=max_seqlen, **kwargs
        )
    seq_length, images = hidden_states.shape[0], lengths.numel()
    query, key, value = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb_vision(query, key, cos, sin)
    # [seq, heads, dim] -> [images, heads, patches, dim]: each image attends to its own patches only.
    query, key, value = (
        t.reshape(images, seq_length // images, self.num_heads, -1).transpose(1, 2) for t in (query, key, value)
    )
    output = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=self.scaling)
    return self.proj(output.transpose(1, 2).reshape(seq_length, -1))


def speed_up_qwen3_vision(model: Any) -> int:
    """Give ``model``'s Qwen3-VL vision modules the faster forwards above; the number of modules changed.

    Models of other families (Qwen2.5-VL's windowed vision tower included) have none of these modules.
    """
    from transformers.models.qwen3_vl import modeling_qwen3_vl as qwen3

    faster = {
        qwen3.Qwen3VLVisionPatchEmbed: _patch_embed_as_matmul,
        qwen3.Qwen3VLVisionAttention: _vision_attention_batched,
    }
    changed = 0
    for module in model.modules():
        forward = faster.get(type(module))
        if forward is None or hasattr(module, "_fgvlm_original_forward"):
            continue  # not a Qwen3-VL vision module, or already changed (never wrap the new forward in itself)
        module._fgvlm_original_forward = module.forward
        module.forward = types.MethodType(forward, module)
        changed += 1
    return changed


class Qwen3VLBackend(HFBackend):
    """Image tokens shift the text positions: after the prefix, position = cache position + ``rope_deltas``."""

    family = "qwen3-vl"
    packed_rank = True

    def __init__(self, model: Any, processor: Any, info: dict[str, Any]):
        super().__init__(model, processor, info)
        if self.device.type == "cpu":  # measured on CPU; on GPUs transformers' own kernels stay in charge
            speed_up_qwen3_vision(self.model)

    def _prefill(self, inputs: dict[str, Any]) -> Prefix:
        import torch

        # The model keeps rope_deltas from its last image prefill; clear it so a text-only prompt gets delta 0.
        # Reached through the unwrapped model: under PEFT, ``self.model.model`` is not the inner Qwen model.
        inner = unwrap_model(self.model).model
        inner.rope_deltas = None
        prefix = super()._prefill(inputs)
        deltas = inner.rope_deltas
        prefix.extra["rope_deltas"] = torch.zeros(1, 1, dtype=torch.long) if deltas is None else deltas.cpu()
        return prefix

    def _continuation_positions(self, prefix: Prefix, offsets: torch.Tensor) -> torch.Tensor:
        import torch

        # Passing the full-length attention mask makes the model derive M-RoPE ids for the whole mask (wrong shape),
        # so give them explicitly: row 0 = text positions (causal mask), rows 1-3 = the M-RoPE axes.
        text = super()._continuation_positions(prefix, offsets)
        mrope = text + prefix.extra["rope_deltas"].to(text.device).reshape(-1)[0]
        return torch.stack([text, mrope, mrope, mrope])


def packed_positions(
    model: Any, input_ids: torch.Tensor, token_types: torch.Tensor, grids: dict[str, torch.Tensor]
) -> torch.Tensor:
    """``(4, 1, L)`` positions of one unpadded sample for padding-free packing (``fgvlm.sft.packing``).

    Row 0 holds the text positions ``0..L-1`` (where they restart, the attention mask builder starts a new causal
    block), rows 1-3 the sample's own M-RoPE positions from the model's ``get_rope_index``; both Qwen families read
    this 4-row layout. ``token_types``: text 0, image 1, video 2 per token; ``grids``: ``image_grid_thw`` /
    ``video_grid_thw`` when the sample has them. ``model`` may be PEFT-wrapped.
    """
    import torch

    inner = unwrap_model(model).model  # the ...VLModel that owns get_rope_index
    with torch.no_grad():
        rope, _ = inner.get_rope_index(input_ids[None], token_types[None], **grids)
    text = torch.arange(input_ids.numel(), device=input_ids.device, dtype=rope.dtype)
    return torch.cat([text.view(1, 1, -1), rope], dim=0)


def tiny_recipe(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
    """Qwen3-VL config + processor at ``dims``: patch 16, merge 2 (image sides in multiples of 32)."""
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
        chat_template=chat_template("qwen3-vl"),
    )
    return config, processor
