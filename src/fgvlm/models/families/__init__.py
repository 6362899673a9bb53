"""One backend class per VLM family, named as ``"module:Class"`` data so importing this package loads no model code.

Each family file holds only what differs from the shared ``fgvlm.models.backend.HFBackend``.
"""

from __future__ import annotations

from fgvlm.registry import import_object, unknown_name

FAMILIES: dict[str, str] = {
    "qwen3-vl": "fgvlm.models.families.qwen_vl:Qwen3VLBackend",
    "qwen2.5-vl": "fgvlm.models.families.qwen_vl:Qwen25VLBackend",
    "idefics2": "fgvlm.models.families.idefics:Idefics2Backend",
    "smolvlm": "fgvlm.models.families.idefics:SmolVLMBackend",
    "instructblip": "fgvlm.models.families.instructblip:InstructBlipBackend",
    "instructblip-t5": "fgvlm.models.families.instructblip:InstructBlipT5Backend",
}


def backend_class(family: str) -> type:
    """The backend class for ``family`` (``qwen3-vl``, ``idefics2``, ...); unknown names list close matches."""
    if family not in FAMILIES:
        raise unknown_name("model family", family, list(FAMILIES))
    return import_object(FAMILIES[family])
