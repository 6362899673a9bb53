"""Tiny offline models of every VLM family: random weights, a locally trained tokenizer, the real processor classes.

They are first-class models, not test doubles: ``build_tiny_model`` saves a checkpoint folder that loads through
the same ``AutoProcessor`` + ``AutoModelForImageTextToText`` path as a hub checkpoint, so every fgvlm command
(zero-shot, SFT, heads) runs on them offline in seconds. Registry names ``tiny-<family>`` (and
``small-qwen3-vl``) are built on demand into the cache by ``cached_tiny_model``; ``tiny-like-<checkpoint>`` names
by ``cached_like_model``: a real checkpoint's config shrunk, with its real tokenizer and processor files
(``fgvlm.models.tiny.like``).

Example::

    from fgvlm.models.tiny import build_tiny_model
    path = build_tiny_model("qwen3-vl", "/tmp/tiny-qwen3-vl", seed=0)
    # AutoModelForImageTextToText.from_pretrained(path), AutoProcessor.from_pretrained(path)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fgvlm.config import ConfigError
from fgvlm.models.families import FamilyRecord, all_families, get_family
from fgvlm.models.tiny import parts
from fgvlm.registry import import_object

BUILDER_VERSION = "2"
"""Bump when a recipe changes what is built: cached models then get a new folder instead of going stale.

2: InstructBLIP (vision init std, Q-Former init std, random query tokens) and Idefics2 (random latents, connector
init std) see the image; earlier builds gave nearly the same outputs for every image."""

SIZES = {"tiny": parts.TINY, "small": parts.SMALL}
MARKER = "fgvlm_tiny.json"
"""Written last into every built folder: what was built (family, size, seed, builder version)."""


class TinyModelError(ConfigError):
    """An unknown family or size for a tiny model; the message lists what exists."""


def check_family_size(family: str, size: str) -> FamilyRecord:
    """The family's record, if it has a tiny recipe of ``size``; else a ``TinyModelError`` listing what exists."""
    records = all_families()
    if family not in records:
        raise TinyModelError(f"no tiny model for family {family!r}; families: {', '.join(records)}")
    if size not in SIZES:
        raise TinyModelError(f"unknown tiny model size {size!r}; sizes: {', '.join(SIZES)}")
    record = get_family(family)
    if size not in record.tiny_sizes:
        having = [name for name, other in records.items() if size in other.tiny_sizes]
        raise TinyModelError(f"size {size!r} exists only for {', '.join(having)}, not {family!r}")
    return record


def build_tiny_model(family: str, out_dir: str | Path, seed: int = 0, size: str = "tiny") -> Path:
    """Build a randomly initialised model of ``family`` and save it (safetensors + processor) into ``out_dir``.

    The same ``seed`` gives byte-identical weights. ``size="tiny"`` is ~0.3-0.5 M params (tests);
    ``size="small"`` (Qwen3-VL only) is ~27 M params with 224-px images (benchmarks).
    """
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    record = check_family_size(family, size)
    config, processor = import_object(record.tiny_recipe)(SIZES[size])
    tokenizer = processor.tokenizer
    with torch.random.fork_rng(devices=[]):  # seed the init without disturbing the caller's random stream
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
        if record.post_init is not None:
            import_object(record.post_init)(model)  # draws from the same seeded stream: deterministic per seed
    stops = [tokenizer.convert_tokens_to_ids(t) for t in (record.stop_tokens or (tokenizer.eos_token,))]
    model.generation_config = GenerationConfig(
        eos_token_id=stops if len(stops) > 1 else stops[0],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        do_sample=False,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    marker = {
        "family": family,
        "size": size,
        "seed": seed,
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    return write_marker(out, marker)


def build_like_model(like: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """Build a random model shaped like the real checkpoint whose hub files are in folder ``like``.

    ``like`` is a path or a folder name under ``fgvlm.models.tiny.like.hub_configs_root()``; see that module.
    """
    from fgvlm.models.tiny import like as like_module

    out, marker = like_module.build_like_model(like, out_dir, seed=seed)
    return write_marker(out, {**marker, "size": "like"})


def write_marker(out: Path, marker: dict[str, Any]) -> Path:
    """Write ``MARKER`` (what was built, with the builder version) last into a built folder; returns the folder."""
    (out / MARKER).write_text(json.dumps({**marker, "builder_version": BUILDER_VERSION}, indent=2) + "\n")
    return out


def read_marker(path: str | Path) -> dict[str, Any] | None:
    """What a tiny model folder was built from, or None for any other folder."""
    marker = Path(path) / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def cache_root() -> Path:
    """``$FGVLM_CACHE`` or ``~/.cache/fgvlm``."""
    return Path(os.environ.get("FGVLM_CACHE") or Path.home() / ".cache" / "fgvlm").expanduser()


def cached_model_dir(name: str, family: str, size: str = "tiny", seed: int = 0) -> Path:
    """Where the registry model ``name`` lives in the cache: the hash changes with the builder version and seed."""
    key = json.dumps([BUILDER_VERSION, family, size, seed])
    return cache_root() / "models" / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def cached_tiny_model(name: str, family: str, size: str = "tiny", seed: int = 0) -> Path:
    """The cached folder of a tiny registry model, building it on first use (see ``build_cached``)."""
    check_family_size(family, size)
    final = cached_model_dir(name, family, size, seed)
    return build_cached(final, lambda staging: build_tiny_model(family, staging, seed=seed, size=size))


def cached_like_model(name: str, like: str, seed: int = 0) -> Path:
    """The cached folder of a ``tiny-like-*`` registry model built from hub-config folder ``like``."""
    from fgvlm.models.tiny.like import like_source

    source = like_source(like)  # a missing source fails here, before any folder is made
    final = cached_model_dir(name, f"like:{source.name}", "like", seed)
    return build_cached(final, lambda staging: build_like_model(source, staging, seed=seed))


def build_cached(final: Path, build: Callable[[Path], Path]) -> Path:
    """``final`` if it holds a complete build, else ``build(staging)`` renamed into place.

    Built into a temporary sibling folder and renamed into place, so a half-built model is never visible. Two
    processes (e.g. under torchrun) may both build it: the first rename wins, the loser deletes its copy.
    """
    if (final / MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".building", dir=final.parent))
    try:
        build(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any model folder
        try:
            os.rename(staging, final)  # atomic; fails if another process already put a complete folder there
        except OSError as err:
            if not (final / MARKER).is_file():
                raise TinyModelError(f"{final} exists but is not a complete tiny model; delete it") from err
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final


__all__ = [
    "BUILDER_VERSION",
    "SIZES",
    "TinyModelError",
    "build_like_model",
    "build_tiny_model",
    "cached_like_model",
    "cache_root",
    "cached_model_dir",
    "cached_tiny_model",
    "read_marker",
]
