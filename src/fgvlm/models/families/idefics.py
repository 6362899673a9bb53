"""Idefics2 and SmolVLM: the processor takes one list of images per sample; everything else is shared."""

from __future__ import annotations

from fgvlm.models.backend import HFBackend


class Idefics2Backend(HFBackend):
    """Answers render as ``' name<end_of_utterance>'`` after ``Assistant:``; the template handles it."""

    family = "idefics2"
    nested_images = True


class SmolVLMBackend(HFBackend):
    """Idefics3-style model; image splitting (``<row_r_col_c>`` tiles) is the processor's business."""

    family = "smolvlm"
    nested_images = True
