"""Qwen3-VL and Qwen2.5-VL: multimodal RoPE (M-RoPE) positions for continuations after a cached prefix."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fgvlm.models.backend import HFBackend, Prefix

if TYPE_CHECKING:
    import torch


class Qwen3VLBackend(HFBackend):
    """Image tokens shift the text positions: after the prefix, position = cache position + ``rope_deltas``."""

    family = "qwen3-vl"

    def _prefill(self, inputs: dict[str, Any]) -> Prefix:
        import torch

        # The model keeps rope_deltas from its last image prefill; clear it so a text-only prompt gets delta 0.
        self.model.model.rope_deltas = None
        prefix = super()._prefill(inputs)
        deltas = self.model.model.rope_deltas
        prefix.extra["rope_deltas"] = torch.zeros(1, 1, dtype=torch.long) if deltas is None else deltas.cpu()
        return prefix

    def _continuation_positions(self, prefix: Prefix, n: int, length: int) -> torch.Tensor:
        import torch

        # Passing the full-length attention mask makes the model derive M-RoPE ids for the whole mask (wrong shape),
        # so give them explicitly: row 0 = text positions (causal mask), rows 1-3 = the M-RoPE axes.
        text = super()._continuation_positions(prefix, n, length)
        mrope = text + prefix.extra["rope_deltas"].to(text.device).reshape(-1)[0]
        return torch.stack([text, mrope, mrope, mrope])


class Qwen25VLBackend(Qwen3VLBackend):
    family = "qwen2.5-vl"
