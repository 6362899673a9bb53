"""InstructBLIP with a decoder-only (OPT/Llama/Vicuna) or an encoder-decoder (Flan-T5) language model.

The processor puts the Q-Former's query ``<image>`` tokens in front of the prompt, outside the padding, so a batch of
different-length prompts does not generate like one-at-a-time (identical prompts do). The model's own outputs
nest the language model's under ``language_model_outputs``; text-only prompts (the ranking prior) run the
language model alone, since the full model needs pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fgvlm.models.backend import HFBackend, Prefix, forward_takes_logits_to_keep

if TYPE_CHECKING:
    import torch
    from PIL import Image


class InstructBlipBackend(HFBackend):
    """Decoder-only language model: the cached prefix is the query tokens + prompt."""

    family = "instructblip"

    def _forward(self, inputs: dict[str, Any], **kwargs: Any) -> Any:
        if "pixel_values" in inputs:
            return self.model(**inputs, **kwargs).language_model_outputs
        return self.model.language_model(**inputs, **kwargs)

    def _text_module(self, prefix: Prefix) -> Any:
        return self.model.language_model

    def _last_logits_only(self, inputs: dict[str, Any]) -> dict[str, Any]:
        # The full model's forward has no logits_to_keep; its language model (Llama/OPT) does, T5 does not.
        module = self.model if "pixel_values" in inputs else self.model.language_model
        return {"logits_to_keep": 1} if forward_takes_logits_to_keep(type(module)) else {}

    def _encode_answered(self, images: list[Image.Image] | None, prompt_text: str, suffix: str) -> dict[str, Any]:
        # The Q-Former reads the instruction only, never the answer: keep the prompt's Q-Former tokens.
        inputs = super()._encode_answered(images, prompt_text, suffix)
        if images is not None:
            prompt_inputs = self.encode(images, [prompt_text])
            for key in ("qformer_input_ids", "qformer_attention_mask"):
                inputs[key] = prompt_inputs[key]
        return inputs


class InstructBlipT5Backend(InstructBlipBackend):
    """Encoder-decoder language model: one encoder pass per image; candidates are scored as decoder targets.

    The "prefix" is the encoder output plus the decoder start token: its cache (self- and cross-attention) is
    repeated for the candidates, as for decoder-only models. ``embed`` pools the encoder's hidden states.
    """

    family = "instructblip-t5"

    @property
    def _start_ids(self) -> torch.Tensor:
        import torch

        start = self.model.language_model.config.decoder_start_token_id
        return torch.tensor([[start]], device=self.device)

    def _forward(self, inputs: dict[str, Any], **kwargs: Any) -> Any:
        if "labels" not in kwargs and "decoder_input_ids" not in kwargs:
            kwargs["decoder_input_ids"] = self._start_ids.expand(inputs["input_ids"].shape[0], 1)
        return super()._forward(inputs, **kwargs)

    def _prefill(self, inputs: dict[str, Any]) -> Prefix:
        import torch

        with torch.inference_mode():
            out = self._forward(inputs, use_cache=True)
        extra = {"encoder": out.encoder_last_hidden_state, "mask": inputs["attention_mask"]}
        return Prefix(out.logits[0, -1], out.cache, 1, extra)

    def _continue(self, prefix: Prefix, cache: Any, ids: torch.Tensor) -> torch.Tensor:
        from transformers.modeling_outputs import BaseModelOutput

        n = ids.shape[0]
        out = self.model.language_model(
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
        with torch.inference_mode():
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
