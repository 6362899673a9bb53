"""A deterministic stand-in VLM (as lm-evaluation-harness's ``DummyLM``): runs every evaluator without a model.

Answers and scores depend only on the image's pixels, the prompt and the seed (a SHA-256 of them), never on
batch composition, process or call order — so sharded, resumed and single-process runs must agree exactly.
``answers`` pins the reply for chosen images (key: ``image_key(image)``), which lets tests build runs with a
known, hand-computed accuracy.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fgvlm.models.base import RankScores, VLMBackend
from fgvlm.models.chat import strip_reasoning

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEFAULT_VOCABULARY = ("rose", "sunflower", "tiger lily", "It is a daisy.", "pink primrose", "I am not sure.")


def image_key(image: Image.Image) -> str:
    """A short content hash of an image (its 16x16 thumbnail), the key of ``DummyBackend(answers=...)``."""
    thumb = image.convert("RGB").resize((16, 16))
    return hashlib.sha256(thumb.tobytes()).hexdigest()[:16]


def _unit(*parts: object) -> float:
    """A number in [0, 1) fixed by its inputs."""
    digest = hashlib.sha256("\0".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class DummyBackend(VLMBackend):
    """Deterministic answers (from ``answers`` or a vocabulary) and hash-seeded scores and features."""

    family = "dummy"

    def __init__(
        self,
        answers: Mapping[str, str] | None = None,
        vocabulary: Sequence[str] = DEFAULT_VOCABULARY,
        seed: int = 0,
        dim: int = 16,
        delay_s: float = 0.0,
    ):
        self.answers = dict(answers or {})
        self.delay_s = delay_s
        """Seconds to sleep per image in each request, imitating a model's latency (so a test can interrupt a run)."""
        self.vocabulary = list(vocabulary)
        self.seed = seed
        self.dim = dim

    def generate(
        self, images: list[Image.Image], prompts: list[str], max_new_tokens: int = 32, *, return_raw: bool = False
    ) -> list[str] | list[tuple[str, str]]:
        """The pinned answer for a known image, else a vocabulary entry picked by hash ("yes"/"no" for yes/no
        questions); cut to ``max_new_tokens`` words. A pinned ``<think>...</think>`` block is stripped as the real
        backends do (``return_raw=True``: ``(answer, raw)`` pairs)."""
        if len(images) != len(prompts):
            raise ValueError(f"generate: {len(images)} images but {len(prompts)} prompts")
        time.sleep(self.delay_s * len(images))
        replies = []
        for image, prompt in zip(images, prompts, strict=True):
            key = image_key(image)
            if key in self.answers:
                reply = self.answers[key]
            elif "yes or no" in prompt.lower():
                reply = "yes" if _unit(self.seed, key, prompt) < 0.5 else "no"
            else:
                reply = self.vocabulary[int(_unit(self.seed, key, prompt) * len(self.vocabulary))]
            replies.append(" ".join(reply.split(" ")[:max_new_tokens]))
        answers = [strip_reasoning(reply) for reply in replies]
        return list(zip(answers, replies, strict=True)) if return_raw else answers

    def rank(self, images: list[Image.Image], prompt: str, candidates: list[str]) -> RankScores:
        """Per-token log-probs in (-5, 0] from a hash of (image, prompt, candidate, token index)."""
        import torch

        time.sleep(self.delay_s * len(images))
        tokens = [max(1, len(c.split())) for c in candidates]
        keys = [image_key(image) for image in images]
        summed = torch.tensor(
            [
                [
                    sum(-5.0 * _unit(self.seed, key, prompt, c, t) for t in range(n))
                    for c, n in zip(candidates, tokens, strict=True)
                ]
                for key in keys
            ],
            dtype=torch.float32,
        ).reshape(len(images), len(candidates))
        prior = torch.tensor([-5.0 * _unit(self.seed, "prior", prompt, c) for c in candidates], dtype=torch.float32)
        return RankScores(
            sum=summed,
            mean=summed / torch.tensor(tokens, dtype=torch.float32),
            prior_subtracted=summed - prior,
            num_tokens=tokens,
        )

    def embed(self, images: list[Image.Image], prompt: str, pooling: str = "mean", layer: int = -1) -> torch.Tensor:
        """A ``[B, dim]`` standard-normal vector seeded by (image, prompt, pooling, layer)."""
        import torch

        rows = []
        for image in images:
            generator = torch.Generator().manual_seed(
                int(_unit(self.seed, image_key(image), prompt, pooling, layer) * 2**63)
            )
            rows.append(torch.randn(self.dim, generator=generator))
        return torch.stack(rows) if rows else torch.zeros(0, self.dim)

    def render_prompt(self, prompt: str) -> str:
        return prompt

    def describe(self) -> dict[str, Any]:
        return {
            "name": "dummy",
            "hub_id": None,
            "local_path": None,
            "family": self.family,
            "seed": self.seed,
            "pinned_answers": len(self.answers),
            "vocabulary": self.vocabulary,
        }
