"""MixUp and CutMix of two PIL images, for instruction data whose image shows two classes at once.

Semantics follow timm's ``timm/data/mixup.py`` (the CNN baseline's MixUp/CutMix), applied to one image pair
instead of a batch: lambda ~ Beta(alpha, alpha) is the share of image ``a`` in the result. MixUp blends the pixels,
``lam * a + (1 - lam) * b``; CutMix pastes a box of area share ``1 - lam`` from ``b`` into ``a`` (timm's
``cutmix_bbox_and_lam``: a box of side ``sqrt(1 - lam)`` times the image's, centred anywhere, clipped at the
border) and then corrects lambda to the area actually cut. Image ``b`` is first resized to ``a``'s size.

Every random draw comes from the numpy ``Generator`` passed in, so a seed fixes the result. timm's box helper
draws from numpy's global state; it is called with that state seeded from the generator and restored afterwards.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from PIL import Image

from fgvlm.config import ConfigError

MODES = ("mixup", "cutmix", "both")
LOSSES = ("lambda-nll", "dominant", "both-names")

Box = tuple[int, int, int, int]
"""(x0, y0, x1, y1) in pixels of image ``a``, half-open (PIL's crop convention): the region taken from ``b``."""


@dataclasses.dataclass(frozen=True)
class MixCutOptions:
    """MixUp/CutMix images (any instruction task with the ``-mixcut`` suffix, or ``images: mixcut`` in
    ``fgvlm sft``): each image mixed with one of another class, and how the two answers are trained.

    The one options class: ``fgvlm prompts build`` and ``fgvlm sft`` (its ``mixcut:`` section) both use it.
    """

    alpha: float = 1.0
    """lambda ~ Beta(alpha, alpha); 1.0 = uniform (timm's CutMix default), smaller pushes lambda towards 0 or 1."""
    mode: str = "both"
    """'mixup', 'cutmix', or 'both' (each image picks one; CutMix with probability switch_prob)."""
    prob: float = 1.0
    """Probability that an image is mixed at all; an unmixed image keeps lambda 1 and no partner."""
    switch_prob: float = 0.5
    """With mode 'both': probability of CutMix instead of MixUp (timm's ``switch_prob``)."""
    loss: str = "lambda-nll"
    """How fine-tuning trains the two answers: lambda-nll: lambda * NLL(answer_a) + (1 - lambda) * NLL(answer_b)
    on the same mixed image (the soft-label analogue); dominant: the answer of the class with the larger share only;
    both-names: one answer naming both ("a and b", the larger share first)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(f"mixcut.mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not self.alpha > 0:
            raise ConfigError(f"mixcut.alpha must be > 0, got {self.alpha!r}")
        for name in ("prob", "switch_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"mixcut.{name} must be between 0 and 1, got {value!r}")
        if self.loss not in LOSSES:
            raise ConfigError(f"mixcut.loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")


@dataclasses.dataclass(frozen=True)
class MixResult:
    """A mixed image and how it was made."""

    image: Image.Image
    lam: float
    """Share of image ``a`` (MixUp: its blend weight; CutMix: the fraction of pixels still from ``a``)."""
    mode: str
    """'mixup' or 'cutmix'."""
    box: Box | None = None
    """CutMix: the region pasted from ``b``; None for MixUp."""


def sample_lambda(rng: np.random.Generator, alpha: float) -> float:
    """lambda ~ Beta(alpha, alpha)."""
    return float(rng.beta(alpha, alpha))


def mixup_images(a: Image.Image, b: Image.Image, lam: float) -> Image.Image:
    """Pixel blend ``lam * a + (1 - lam) * b`` (b resized to a's size), rounded to the nearest integer."""
    pixels_a, pixels_b = _as_arrays(a, b)
    mixed = lam * pixels_a + (1.0 - lam) * pixels_b
    return Image.fromarray(np.clip(np.rint(mixed), 0, 255).astype(np.uint8), mode="RGB")


def cutmix_images(a: Image.Image, b: Image.Image, box: Box) -> Image.Image:
    """Image ``a`` with the region ``box`` replaced by the same region of ``b`` (b resized to a's size)."""
    pixels_a, pixels_b = _as_arrays(a, b)
    x0, y0, x1, y1 = box
    mixed = pixels_a.copy()
    mixed[y0:y1, x0:x1] = pixels_b[y0:y1, x0:x1]
    return Image.fromarray(mixed.astype(np.uint8), mode="RGB")


def cutmix_box(size: tuple[int, int], lam: float, rng: np.random.Generator) -> tuple[Box, float]:
    """A CutMix box for an image of ``size`` (width, height) and lambda corrected to its area.

    timm's ``cutmix_bbox_and_lam`` draws the box: sides ``int(side * sqrt(1 - lam))``, a centre anywhere in the
    image, clipped at the border; the corrected lambda is ``1 - box area / image area``.
    """
    from timm.data.mixup import cutmix_bbox_and_lam

    width, height = size
    with _numpy_global_seed(int(rng.integers(2**32))):
        (y0, y1, x0, x1), corrected = cutmix_bbox_and_lam((height, width), lam, correct_lam=True)
    return (int(x0), int(y0), int(x1), int(y1)), float(corrected)


def mix_images(
    a: Image.Image, b: Image.Image, rng: np.random.Generator, options: MixCutOptions | None = None
) -> MixResult:
    """Mix ``a`` with ``b`` by MixUp or CutMix as ``options`` say; all randomness from ``rng``."""
    options = options or MixCutOptions()
    lam = sample_lambda(rng, options.alpha)
    mode = options.mode
    if mode == "both":
        mode = "cutmix" if rng.random() < options.switch_prob else "mixup"
    if mode == "mixup":
        return MixResult(mixup_images(a, b, lam), lam, "mixup")
    box, lam = cutmix_box(a.size, lam, rng)
    return MixResult(cutmix_images(a, b, box), lam, "cutmix", box)


def _as_arrays(a: Image.Image, b: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    a = a.convert("RGB")
    b = b.convert("RGB")
    if b.size != a.size:
        b = b.resize(a.size, Image.Resampling.BICUBIC)
    return np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)


@contextmanager
def _numpy_global_seed(seed: int) -> Iterator[None]:
    """Seed numpy's global random state for the block, then restore it (so callers' streams are untouched)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)
