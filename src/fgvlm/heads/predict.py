"""``fgvlm predict``: top-5 class names with probabilities for users' own images.

With a trained head (``--head RUN_DIR``) the images are embedded exactly as in training (same prompt, pooling,
layer) and the head's softmax is reported. Without one, the class names are ranked zero-shot: the open-qa prompt,
the backend's per-token mean log-likelihood of every name (summed scores favour short names), softmaxed over classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fgvlm.config import ConfigError
from fgvlm.eval.results import TOPK, top_k

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from fgvlm.models.base import VLMBackend


@dataclass
class Prediction:
    """One image's answer: the file, the top classes as (name, probability), and how they were obtained."""

    image: str
    top: list[tuple[str, float]]
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "method": self.method, "top": [[n, round(p, 6)] for n, p in self.top]}


def load_images(paths: list[str | Path]) -> list[Image.Image]:
    """Decode users' image files as RGB; a missing or unreadable file raises ``BadImageError`` naming it."""
    from fgvlm.data.base import load_rgb

    return [load_rgb(Path(p), "predict") for p in paths]


def _top(probs: torch.Tensor, names: list[str], k: int) -> list[list[tuple[str, float]]]:
    return [[(names[c], p) for c, p in row] for row in top_k(probs, k)]


def head_probabilities(backend: VLMBackend, images: list[Image.Image], run_dir: str | Path, batch_size: int = 8):
    """Class probabilities ``[N, C]`` from a trained head, and the head's ``head.json``."""
    import torch

    from fgvlm.heads.model import load_head

    head, info = load_head(run_dir)
    chunks = []
    for begin in range(0, len(images), batch_size):
        batch = images[begin : begin + batch_size]
        chunks.append(backend.embed(batch, info["prompt"], pooling=info["pooling"], layer=info["layer"]).float().cpu())
    with torch.no_grad():
        return torch.softmax(head(torch.cat(chunks)), dim=1), info


def zero_shot_probabilities(
    backend: VLMBackend, images: list[Image.Image], class_names: list[str], prompt: str, batch_size: int = 8
) -> torch.Tensor:
    """Softmax over classes of the per-token mean log-likelihood of each class name as the answer."""
    import torch

    scores = []
    for begin in range(0, len(images), batch_size):
        scores.append(backend.rank(images[begin : begin + batch_size], prompt, class_names).mean.float().cpu())
    return torch.softmax(torch.cat(scores), dim=1)


def zero_shot_prompt(dataset: str, family: str | None) -> str:
    """The open-qa question of ``fgvlm eval`` in the family's wording, so predict ranks as ``fgvlm eval`` does."""
    from fgvlm.prompts import build_prompt, object_word

    return build_prompt("open-qa", ["-"], family=family, object=object_word(dataset)).text


def predict_images(
    backend: VLMBackend,
    paths: list[str | Path],
    head_dir: str | Path | None = None,
    class_names: list[str] | None = None,
    dataset: str = "flowers102",
    k: int = TOPK,
) -> list[Prediction]:
    """Top-``k`` class names for each image file, by a trained head or by zero-shot ranking of ``class_names``."""
    images = load_images(paths)
    if head_dir is not None:
        probs, info = head_probabilities(backend, images, head_dir)
        names, method = info["prompt_names"], f"head:{head_dir}"
    else:
        if not class_names:
            raise ConfigError("zero-shot prediction needs class names (from --dataset, or a --head run)")
        prompt = zero_shot_prompt(dataset, getattr(backend, "family", None))
        probs, names, method = zero_shot_probabilities(backend, images, class_names, prompt), class_names, "zero-shot"
    return [Prediction(str(p), top, method) for p, top in zip(paths, _top(probs, names, k), strict=True)]
