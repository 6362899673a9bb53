"""One record per VLM family: everything fgvlm knows about a family, in one place.

A family (``qwen3-vl``, ``idefics2``, ...) is the unit of variation between VLMs. Its ``FamilyRecord`` names the
``config.model_type`` values that identify it, its backend class, its tiny-model recipe (and the re-initialisation
that recipe needs, and the rule that shrinks a real checkpoint's config into a like-model), its stop tokens, its chat
template file, whether Qwen-style pixel bounds apply, whether the language model is an encoder-decoder (which picks
the encoder-decoder loss and ranking paths), and what fine-tuning needs: the prompt formats it accepts, whether it
packs samples padding-free (and the function that gives a packed sample its positions), a LoRA ``target_modules``
regex that adapts the language model only, and the parameter-name prefixes of the vision tower, the
projector/connector and the language model (they partition the model's parameters).

Code outside this package asks the record (``get_family(name).encoder_decoder``); it never compares family names
(``tests/test_layers.py`` checks).

Each family is ONE file in this package holding its record (``FAMILY``), its backend class and its tiny recipe.
Adding a family = that file + one entry in ``FAMILY_RECORDS`` (see the README, "Add a model family"). Entries are
``"module:attribute"`` strings, so importing this package loads no model code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from typing import Any

from fgvlm.config import ConfigError
from fgvlm.registry import import_object, unknown_name

FAMILY_RECORDS: tuple[str, ...] = (
    "fgvlm.models.families.qwen3_vl:FAMILY",
    "fgvlm.models.families.qwen2_5_vl:FAMILY",
    "fgvlm.models.families.idefics2:FAMILY",
    "fgvlm.models.families.smolvlm:FAMILY",
    "fgvlm.models.families.instructblip:FAMILY",
    "fgvlm.models.families.instructblip_t5:FAMILY",
)
"""Every family's record, in the order ``family_names()`` lists them."""


class UnknownFamilyError(ConfigError):
    """A model config whose family fgvlm cannot tell; the message says how to name one."""


@dataclass(frozen=True)
class FamilyRecord:
    """What fgvlm knows about one VLM family (see the module docstring)."""

    name: str
    """Family name used in configs and presets (``qwen3-vl``)."""
    model_types: tuple[str, ...]
    """``config.model_type`` values of this family's checkpoints (empty: only by explicit ``model.family``)."""
    backend: str
    """Backend class, ``"module:Class"`` (a subclass of ``fgvlm.models.backend.HFBackend``)."""
    tiny_recipe: str
    """``"module:function"``: ``function(dims) -> (config, processor)`` for ``build_tiny_model``."""
    post_init: str | None = None
    """``"module:function"`` re-initialising a freshly built tiny model (where random init ignores the image)."""
    stop_tokens: tuple[str, ...] = ()
    """Tokens that end generation (tiny models' generation config); empty: the tokenizer's eos."""
    template: str | None = None
    """Chat template file in ``fgvlm/models/templates`` (tiny models; the fallback when a checkpoint has none)."""
    pixel_bounds: bool = False
    """``model.min_pixels`` / ``model.max_pixels`` apply (dynamic-resolution image processors)."""
    encoder_decoder: bool = False
    """The language model is an encoder-decoder (T5): tells apart families sharing a ``model_type``."""
    lora_target_modules: str = ""
    """Regex for ``peft.LoraConfig(target_modules=...)`` matching the language model's linear layers only."""
    vision_modules: tuple[str, ...] = ()
    """Parameter-name prefixes (as in ``model.named_parameters()``) of the vision tower."""
    projector_modules: tuple[str, ...] = ()
    """Parameter-name prefixes of the projector / connector between vision tower and language model."""
    language_modules: tuple[str, ...] = ()
    """Parameter-name prefixes of the language model (embeddings and head included)."""
    tiny_sizes: tuple[str, ...] = ("tiny",)
    """Sizes ``build_tiny_model`` offers for this family (``tiny``; ``small`` for benchmarks)."""
    like_shrink: str | None = None
    """``"module:function"``: ``function(config) -> config`` shrinking a real checkpoint's config for a like-model
    (``fgvlm.models.tiny.like``); None: no ``tiny-like-*`` models of this family."""
    prompt_formats: tuple[str, ...] = ("chat-template",)
    """SFT ``prompt_format`` values this family accepts: ``chat-template`` (the model's own) and, for Qwen-style
    special tokens, ``lmms-engine`` (the reference framework's conversation)."""
    packing_positions: str | None = None
    """``"module:function"``: ``function(model, input_ids, token_types, grids) -> (4, 1, L)`` position ids of one
    unpadded sample, so samples can be packed padding-free in one row (``fgvlm.sft.packing``); None: the family
    pads (its attention needs a padding mask)."""

    tiny_lr: float | None = None
    """Learning rate at which this family's tiny random model learns SynthFlowers when trained whole
    (``scripts/sft_evidence.py``); None: the script's default (3e-3). A measured fact, not a recipe for real
    checkpoints."""

    def part_of(self, parameter: str) -> str | None:
        """``"vision"``, ``"projector"`` or ``"language"`` for a parameter name; None if no prefix matches."""
        for part, prefixes in (
            ("vision", self.vision_modules),
            ("projector", self.projector_modules),
            ("language", self.language_modules),
        ):
            if any(parameter == prefix or parameter.startswith(prefix + ".") for prefix in prefixes):
                return part
        return None


@functools.cache
def _records(entries: tuple[str, ...]) -> dict[str, FamilyRecord]:
    records: dict[str, FamilyRecord] = {}
    for entry in entries:
        record = import_object(entry)
        if not isinstance(record, FamilyRecord):
            raise TypeError(f"{entry} is not a FamilyRecord (got {type(record).__name__})")
        if record.name in records:
            raise ValueError(f"family {record.name!r} is defined twice (second time in {entry})")
        records[record.name] = record
    return records


def all_families() -> dict[str, FamilyRecord]:
    """Every registered family's record by name (``FAMILY_RECORDS`` is read at each call)."""
    return _records(tuple(FAMILY_RECORDS))


def family_names() -> list[str]:
    """Registered family names, in ``FAMILY_RECORDS`` order."""
    return list(all_families())


def get_family(name: str) -> FamilyRecord:
    """The record of family ``name``; unknown names list close matches (``UnknownNameError``)."""
    records = all_families()
    if name not in records:
        raise unknown_name("model family", name, list(records))
    return records[name]


def family_for_config(config: Any) -> FamilyRecord:
    """The family of a transformers config (or its dict) from ``model_type``; shared types by the LM's kind."""
    raw = config if isinstance(config, dict) else config.to_dict()
    model_type = raw.get("model_type")
    matches = [record for record in all_families().values() if model_type in record.model_types]
    if not matches:
        raise UnknownFamilyError(
            f"cannot tell the model family of model_type {model_type!r}; set model.family to one "
            f"of {', '.join(family_names())} (e.g. --set model.family=qwen3-vl) if it works like one"
        )
    if len(matches) > 1:
        text = raw.get("text_config") or {}
        encoder_decoder = bool(text.get("is_encoder_decoder")) or text.get("model_type") in ("t5", "mt5", "umt5")
        matches = [record for record in matches if record.encoder_decoder == encoder_decoder] or matches
    return matches[0]


def backend_class(family: str) -> type:
    """The backend class for ``family`` (``qwen3-vl``, ``idefics2``, ...); unknown names list close matches."""
    return import_object(get_family(family).backend)


def read_template(name: str) -> str:
    """A chat template file kept in ``fgvlm/models/templates`` (``qwen3_vl.jinja``)."""
    return resources.files("fgvlm.models").joinpath("templates", name).read_text()


__all__ = [
    "FAMILY_RECORDS",
    "FamilyRecord",
    "UnknownFamilyError",
    "all_families",
    "backend_class",
    "family_for_config",
    "family_names",
    "get_family",
    "read_template",
]
