"""Tiny models shaped like a real checkpoint: its config shrunk, its real tokenizer, processor and chat template.

``build_like_model(source, out)`` reads a hub folder with the configuration and processor files of a real
checkpoint (no weights needed, e.g. ``../shared/data/hub-configs/Qwen__Qwen3-VL-4B-Instruct``), keeps everything
the tokenizer and the processor depend on -- vocabulary size, every special-token id, the vision patch, merge and
temporal-patch sizes, rope settings -- and shrinks only width and depth (``LIKE_DIMS``). The source's tokenizer,
processor, chat template and generation config files are copied beside the random weights unchanged, so prompts,
image-token counts and answer tokens are exactly the real checkpoint's. Registry names ``tiny-like-<checkpoint>``
build from the shared hub-config folders (``hub_configs_root``) into the cache on first use.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from fgvlm.config import ConfigError
from fgvlm.models.tiny.parts import Dims

LIKE_DIMS = Dims(hidden=32, layers=2, heads=2, kv_heads=1, vision_hidden=32, vision_layers=2, vision_heads=2)
"""Width and depth of a like-model: the full ~152 k vocabulary x 32 is most of its ~5 M parameters (~20 MB)."""
COPIED = (
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "chat_template.json",
    "chat_template.jinja",
    "tokenizer_config.json",
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "generation_config.json",
)
"""Files copied unchanged from the source folder (those that exist)."""
HUB_CONFIGS_ENV = "FGVLM_HUB_CONFIGS"


class LikeModelError(ConfigError):
    """A source folder that cannot be shrunk (missing, or a family without a shrink rule)."""


def hub_configs_root() -> Path:
    """``$FGVLM_HUB_CONFIGS``, else ``../shared/data/hub-configs`` beside the repository this package runs from."""
    if os.environ.get(HUB_CONFIGS_ENV):
        return Path(os.environ[HUB_CONFIGS_ENV]).expanduser()
    return Path(__file__).resolve().parents[4].parent / "shared" / "data" / "hub-configs"


def like_source(name: str) -> Path:
    """The hub-config folder ``name`` (a folder name under ``hub_configs_root()``, or a path)."""
    path = Path(name).expanduser()
    if not path.is_absolute():
        path = hub_configs_root() / name
    if not (path / "config.json").is_file():
        raise LikeModelError(
            f"no hub config folder at {path} (expected config.json there); set ${HUB_CONFIGS_ENV} to the folder "
            "holding the hub-config copies"
        )
    return path


def scaled_sections(sections: list[int], total: int) -> list[int]:
    """M-RoPE sections rescaled to sum to ``total`` (= head_dim / 2), each >= 1, the remainder on the first."""
    whole = sum(sections)
    scaled = [max(1, section * total // whole) for section in sections]
    scaled[0] += total - sum(scaled)
    return scaled


def shrink_qwen_vl(config: Any, dims: Dims = LIKE_DIMS) -> Any:
    """Qwen3-VL / Qwen2.5-VL config at ``dims``' width and depth; ids, vocabulary and vision geometry untouched."""
    text, vision = config.text_config, config.vision_config
    text.hidden_size, text.intermediate_size = dims.hidden, dims.hidden * 2
    text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads = dims.layers, dims.heads, dims.kv_heads
    text.head_dim = dims.head_dim
    if getattr(text, "layer_types", None):
        text.layer_types = text.layer_types[: dims.layers]
    rope = dict(text.rope_parameters)
    rope["mrope_section"] = scaled_sections(rope["mrope_section"], dims.head_dim // 2)
    text.rope_parameters = rope
    vision.depth, vision.hidden_size, vision.num_heads = dims.vision_layers, dims.vision_hidden, dims.vision_heads
    vision.intermediate_size, vision.out_hidden_size = dims.vision_hidden * 2, dims.hidden
    if hasattr(vision, "deepstack_visual_indexes"):  # Qwen3-VL: features of earlier layers fed to the LM
        vision.deepstack_visual_indexes = list(range(dims.vision_layers - 1))
    if hasattr(vision, "fullatt_block_indexes"):  # Qwen2.5-VL: windowed attention, full in the last block
        vision.fullatt_block_indexes = [dims.vision_layers - 1]
    return config


def shrink_rule(source: Path, config: Any) -> Any:
    """The family record's ``like_shrink`` function for ``config``; a family without one is refused."""
    from fgvlm.models.families import UnknownFamilyError, all_families, family_for_config
    from fgvlm.registry import import_object

    try:
        record = family_for_config(config)
    except UnknownFamilyError:
        record = None
    if record is None or record.like_shrink is None:
        supported = [t for r in all_families().values() if r.like_shrink is not None for t in r.model_types]
        raise LikeModelError(
            f"{source}: no shrink rule for model_type {config.model_type!r}; supported: {', '.join(supported)}"
        )
    return import_object(record.like_shrink)


def build_like_model(source: str | Path, out: str | Path, seed: int = 0) -> tuple[Path, dict[str, Any]]:
    """Build a random model shaped like ``source`` into ``out``; returns ``(out, marker fields)``."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    from fgvlm.models.families import family_for_config
    from fgvlm.runs import fingerprint_path

    source = like_source(str(source))
    config = AutoConfig.from_pretrained(source)
    config = shrink_rule(source, config)(config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    for name in COPIED:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)  # the real files win over what save_pretrained wrote
    marker = {
        "family": family_for_config(config).name,
        "like": source.name,
        "like_fingerprint": fingerprint_path(source),
        "seed": seed,
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    return out, marker
