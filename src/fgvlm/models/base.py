"""The one VLM interface every family answers: ``generate``, ``rank`` and ``embed``.

Named after the requests, as in lm-evaluation-harness: ``generate`` is free-form answering (zero-shot generate +
parse), ``rank`` is the log-likelihood of every candidate answer (zero-shot class-name ranking), ``embed`` is a
pooled hidden state (heads and probes). Family files (``fgvlm/models/families/``) hold only what differs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

POOLINGS = ("last", "mean", "image-mean")


@dataclass
class ModelConfig:
    """How to load a VLM: a registry name (``fgvlm list models``), a hub id or a local directory."""

    name: str = "tiny-qwen3-vl"
    """Registry name (qwen3-vl-4b, tiny-qwen3-vl, ...), hub id (Qwen/Qwen3-VL-4B-Instruct) or local folder."""
    family: str | None = None
    """Family override when it cannot be read from the model's config (qwen3-vl, idefics2, ...)."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) for hub ids."""
    dtype: str | None = None
    """float32, bfloat16, float16 or auto (the checkpoint's own); None = float32 on CPU, and on GPU the preset's,
    else the checkpoint's own dtype."""
    device: str | None = None
    """cpu, cuda, cuda:1 ...; None = cuda when available, else cpu. Ignored when device_map is set."""
    device_map: str | None = None
    """Passed to from_pretrained (e.g. 'auto' to spread a large model over GPUs)."""
    attn_implementation: str | None = None
    """sdpa, eager, flash_attention_2; None = the transformers default."""
    min_pixels: int | None = None
    """Lower bound on image pixels for families with dynamic resolution (Qwen)."""
    max_pixels: int | None = None
    """Upper bound on image pixels for families with dynamic resolution (Qwen)."""
    trust_remote_code: bool = False
    """Run code shipped with a checkpoint. Off unless you ask: it executes whatever the repository contains."""
    extra: dict[str, Any] = field(default_factory=dict)
    """More keyword arguments for from_pretrained."""


@dataclass
class RankScores:
    """Candidate log-likelihoods for a batch of images, each ``[B, C]`` (float32, on CPU)."""

    sum: torch.Tensor
    """Summed log-probability of each candidate's tokens given image + prompt."""
    mean: torch.Tensor
    """Per-token mean (length-normalised; summed scores favour short names)."""
    prior_subtracted: torch.Tensor
    """``sum`` minus the candidate's log-likelihood given the prompt without the image (calibration)."""
    num_tokens: list[int]
    """Tokens per candidate continuation."""

    def get(self, kind: str) -> torch.Tensor:
        return {"sum": self.sum, "mean": self.mean, "prior": self.prior_subtracted}[kind]


class VLMBackend:
    """A loaded vision-language model. Subclasses (one per family) implement the three requests."""

    family: str = "generic"
    usage: Any = None
    """A ``fgvlm.models.flops.ModelUsage`` counting what the model ran (None: this backend counts nothing)."""
    flops_rule: str | None = None
    """How ``counted_flops`` counts (``fgvlm.models.flops.VLM_FORWARD_RULE`` for the transformers backends)."""

    def counted_flops(self, usage: Any) -> float | None:
        """FLOPs of ``usage`` by the backend's counting rule (None: not counted)."""
        return None

    def generate(
        self, images: list[Image.Image], prompts: list[str], max_new_tokens: int = 32, *, return_raw: bool = False
    ) -> list[str] | list[tuple[str, str]]:
        """Greedy answers to one prompt per image, batched with left padding; answer text only, a leading
        ``<think>...</think>`` block stripped. ``return_raw``: ``(answer, raw decoded text)`` pairs instead."""
        raise NotImplementedError

    def rank(self, images: list[Image.Image], prompt: str, candidates: list[str]) -> RankScores:
        """Log-likelihood of every candidate as the assistant's answer to ``prompt`` about each image."""
        raise NotImplementedError

    def embed(self, images: list[Image.Image], prompt: str, pooling: str = "mean", layer: int = -1) -> torch.Tensor:
        """Pooled hidden states ``[B, D]`` of layer ``layer`` over last / all real / image tokens."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What ``meta.json`` records: name, hub id + revision or local path + fingerprint, family, dtype, device."""
        raise NotImplementedError
