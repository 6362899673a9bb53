"""InstructBLIP with an encoder-decoder (Flan-T5) language model: record, backend and tiny recipe."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fgvlm.models.backend import Prefix
from fgvlm.models.families import FamilyRecord
from fgvlm.models.families.instructblip import InstructBlipBackend
from fgvlm.models.tiny.parts import Dims, instructblip_parts
from fgvlm.models.tiny.tokenizer import train_bpe_tokenizer

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from transformers import PreTrainedConfig, ProcessorMixin

FAMILY = FamilyRecord(
    name="instructblip-t5",
    model_types=("instructblip",),
    backend="fgvlm.models.families.instructblip_t5:InstructBlipT5Backend",
    tiny_recipe="fgvlm.models.families.instructblip_t5:tiny_recipe",
    post_init="fgvlm.models.families.instructblip:post_init",
    template="instructblip.jinja",
    encoder_decoder=True,
    lora_target_modules=(
        r"(.*\.)?language_model\.(encoder|decoder)\.block\.\d+\.layer\.\d+\."
        r"(SelfAttention|EncDecAttention|DenseReluDense)\.(q|k|v|o|wi_0|wi_1|wo)"
    ),
    vision_modules=("vision_model",),
    projector_modules=("query_tokens", "qformer", "language_projection"),
    language_modules=("language_model",),
)


class InstructBlipT5Backend(InstructBlipBackend):
    """Encoder-decoder language model: one encoder pass per image; candidates are scored as decoder targets.

    The "prefix" is the encoder output plus the decoder start token: its cache (self- and cross-attention) is
    repeated for the candidates, as for decoder-only models. ``embed`` pools the encoder's hidden states.
    """

    family = "instructblip-t5"

    @property
    def _start_ids(self) -> torch.Tensor:
        import torch

        start = self.language_model.config.decoder_start_token_id
        return torch.tensor([[start]], device=self.device)

    def _forward(self, inputs: dict[str, Any], **kwargs: Any) -> Any:
        if "labels" not in kwargs and "decoder_input_ids" not in kwargs:
            kwargs["decoder_input_ids"] = self._start_ids.expand(inputs["input_ids"].shape[0], 1)
        return super()._forward(inputs, **kwargs)

    def _prefill(self, inputs: dict[str, Any]) -> Prefix:
        out = self._forward(inputs, use_cache=True)
        extra = {"encoder": out.encoder_last_hidden_state, "mask": inputs["attention_mask"]}
        return Prefix(out.logits[0, -1], out.cache, 1, extra)

    def _continue(self, prefix: Prefix, cache: Any, ids: torch.Tensor) -> torch.Tensor:
        from transformers.modeling_outputs import BaseModelOutput

        n = ids.shape[0]
        out = self.language_model(
            encoder_outputs=BaseModelOutput(last_hidden_state=prefix.extra["encoder"].expand(n, -1, -1)),
            attention_mask=prefix.extra["mask"].expand(n, -1),
            decoder_input_ids=ids,
            cache=cache,
            use_cache=True,
        )
        return out.logits

    def _score_brute_force(
        self, images: list[Image.Image] | None, prompt_text: str, suffixes: list[str], cont_ids: list[list[int]]
    ) -> torch.Tensor:
        import torch

        inputs = self.encode(images, [prompt_text])
        scores = []
        with self._inference():
            for ids in cont_ids:
                labels = torch.tensor([ids], device=self.device)
                logprobs = torch.log_softmax(
                    self._forward(inputs, labels=labels, use_cache=False).logits[0].float(), -1
                )
                scores.append(logprobs.gather(-1, labels[0][:, None]).sum().cpu())
        return torch.stack(scores)

    def _new_tokens(self, output: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        return output  # the decoder's tokens only: the prompt went to the encoder

    def _hidden_states(self, out: Any) -> tuple[torch.Tensor, ...]:
        return out.encoder_hidden_states


def tiny_recipe(dims: Dims) -> tuple[PreTrainedConfig, ProcessorMixin]:
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
