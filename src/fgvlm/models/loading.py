"""Load a VLM from a registry name, a hub id or a local folder, the same way for a 4 B checkpoint and a tiny one.

``load_model`` resolves ``ModelConfig.name`` (preset -> hub id or cached tiny model; an existing folder; an
``org/name`` hub id), reads its config to find the family, then goes through ``AutoProcessor`` +
``AutoModelForImageTextToText`` with safetensors only and ``trust_remote_code`` off unless asked. Failures say what
to do: unknown names list close matches, offline hub ids say to pass a folder, custom code says how to allow it.

Example::

    from fgvlm.models.base import ModelConfig
    from fgvlm.models.loading import load_model
    model, processor, info = load_model(ModelConfig(name="tiny-qwen3-vl"))
    info["family"], info["num_parameters"]  # ('qwen3-vl', 329504)
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fgvlm.config import ConfigError
from fgvlm.models.base import ModelConfig
from fgvlm.models.families import UnknownFamilyError, all_families, family_for_config, get_family, read_template

if TYPE_CHECKING:
    from fgvlm.models.base import VLMBackend

LOCAL_BACKENDS = {"dummy": "fgvlm.models.dummy:DummyBackend"}
"""Backends that need no checkpoint, by model name; anything else is loaded by ``load_backend``."""
DTYPES = ("float32", "bfloat16", "float16")
CHECKPOINT_DTYPE = "auto"
"""``dtype`` for from_pretrained meaning "as the checkpoint stores it" (its config's ``dtype``)."""
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
GUARDED_KWARGS = {"use_safetensors", "trust_remote_code", "revision"}
"""from_pretrained arguments ``model.extra`` may not override: the safety defaults and the recorded revision."""
ENABLE_REMOTE_CODE = "--set model.trust_remote_code=true (or trust_remote_code: true under model: in the YAML)"


class ModelLoadError(ConfigError):
    """A model that cannot be found or loaded as configured; the message says what to change."""


@dataclass
class ModelSource:
    """Where ``ModelConfig.name`` points: a hub id or a local folder, plus the preset's defaults."""

    name: str
    hub_id: str | None = None
    local_path: Path | None = None
    family: str | None = None
    dtype: str | None = None

    @property
    def location(self) -> str:
        return str(self.local_path) if self.local_path is not None else str(self.hub_id)


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def resolve_source(name: str) -> ModelSource:
    """Registry name -> preset (tiny ones are built into the cache on first use); else a folder; else a hub id."""
    from fgvlm.registry import model_presets, unknown_name

    presets = {key: value for key, value in model_presets().items() if not key.startswith("_")}
    if name in presets:
        preset = presets[name]
        if preset.get("tiny"):
            from fgvlm.models.tiny import cached_like_model, cached_tiny_model

            if preset.get("like"):
                path = cached_like_model(name, preset["like"], preset.get("seed", 0))
            else:
                path = cached_tiny_model(name, preset["family"], preset.get("size", "tiny"), preset.get("seed", 0))
            return ModelSource(name, local_path=path, family=preset["family"], dtype=preset.get("dtype"))
        return ModelSource(name, hub_id=preset["hub_id"], family=preset.get("family"), dtype=preset.get("dtype"))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelLoadError(
                f"{name} is not a model directory: expected a folder with config.json, as written "
                "by save_pretrained (or `fgvlm models tiny`)"
            )
        return ModelSource(name, local_path=path.resolve())
    if HUB_ID.match(name) and not name.startswith((".", "~")):
        return ModelSource(name, hub_id=name)
    if "/" in name or name.startswith((".", "~")):
        raise ModelLoadError(f"model directory {name} does not exist")
    raise unknown_name("model", name, list(presets))


def check_hub_available(hub_id: str, revision: str | None) -> None:
    """Offline, a hub id works only if it is already in the local hub cache: say so before transformers does."""
    from huggingface_hub import try_to_load_from_cache

    if hub_offline() and not isinstance(try_to_load_from_cache(hub_id, "config.json", revision=revision), str):
        raise ModelLoadError(
            f"cannot download {hub_id} offline (HF_HUB_OFFLINE=1) and it is not in the local hub "
            "cache; pass a local directory as the model name (e.g. --set model.name=/path/to/model)"
        )


def read_config(source: ModelSource, cfg: ModelConfig) -> Any:
    """The checkpoint's transformers config; refuses custom code unless ``trust_remote_code`` is set."""
    from transformers import AutoConfig

    if source.local_path is not None and not cfg.trust_remote_code:
        raw = json.loads((source.local_path / "config.json").read_text())
        if raw.get("auto_map"):
            require_known_model_type(source, raw.get("model_type"))
    try:
        return AutoConfig.from_pretrained(
            source.location, revision=revision_for(source, cfg), trust_remote_code=cfg.trust_remote_code
        )
    except ValueError as err:
        if "trust_remote_code" in str(err):
            raise ModelLoadError(needs_remote_code(source)) from None
        raise ModelLoadError(f"cannot read the model config of {source.location}: {err}") from err
    except OSError as err:
        raise ModelLoadError(f"cannot load {source.location}: {err}. Offline, pass a local directory instead") from err


def require_known_model_type(source: ModelSource, model_type: str | None) -> None:
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ModelLoadError(needs_remote_code(source))


def needs_remote_code(source: ModelSource) -> str:
    return (
        f"{source.location} needs its own Python code (trust_remote_code), which is off by default because it "
        f"runs whatever the checkpoint ships; if you trust it, enable it with {ENABLE_REMOTE_CODE}"
    )


def revision_for(source: ModelSource, cfg: ModelConfig) -> str | None:
    return cfg.revision if source.hub_id is not None else None


def detect_family(config: Any) -> str:
    """The fgvlm family of a transformers config (or its dict), from the family records' ``model_types``."""
    try:
        return family_for_config(config).name
    except UnknownFamilyError as err:
        raise ModelLoadError(str(err)) from None


def choose_family(cfg: ModelConfig, source: ModelSource, config: Any) -> str:
    """``model.family`` if set, else the preset's, else read from the config."""
    family = cfg.family or source.family
    if family is None:
        return detect_family(config)
    return get_family(family).name  # unknown names raise, listing close matches


def choose_dtype(asked: str | None, preset: str | None, on_gpu: bool) -> str:
    """The dtype to load in: ``model.dtype`` if set; on CPU float32; on GPU the preset's, else ``"auto"``.

    ``"auto"`` keeps the checkpoint's own dtype (bfloat16 for most current VLMs): a hub id or folder without a
    preset would otherwise load in float32 on a GPU, doubling memory and time. CPU stays float32, where half
    precision is slow or unsupported.
    """
    dtype = asked or ((preset or CHECKPOINT_DTYPE) if on_gpu else "float32")
    if dtype not in DTYPES and dtype != CHECKPOINT_DTYPE:
        raise ModelLoadError(f"model.dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return dtype


def choose_device_dtype(cfg: ModelConfig, source: ModelSource) -> tuple[str, str]:
    """Device: asked, else cuda when there is one. Dtype: see ``choose_dtype``."""
    import torch

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = cfg.device_map is not None or not device.startswith("cpu")
    return device, choose_dtype(cfg.dtype, source.dtype, on_gpu)


def apply_pixel_bounds(cfg: ModelConfig, family: str, processor: Any) -> None:
    """Qwen's ``min_pixels`` / ``max_pixels`` -> the image processor's ``size`` (shortest/longest edge, in pixels)."""
    if cfg.min_pixels is None and cfg.max_pixels is None:
        return
    if not get_family(family).pixel_bounds:
        bounded = [name for name, record in all_families().items() if record.pixel_bounds]
        raise ModelLoadError(
            f"model.min_pixels / model.max_pixels apply to {', '.join(bounded)} only, not {family}; unset them"
        )
    image_processor = processor.image_processor
    size = {"shortest_edge": image_processor.size.shortest_edge, "longest_edge": image_processor.size.longest_edge}
    if cfg.min_pixels is not None:
        size["shortest_edge"] = cfg.min_pixels
    if cfg.max_pixels is not None:
        size["longest_edge"] = cfg.max_pixels
    if size["shortest_edge"] > size["longest_edge"]:
        raise ModelLoadError(
            f"model.min_pixels ({size['shortest_edge']}) exceeds model.max_pixels ({size['longest_edge']})"
        )
    image_processor.size = size


def load_model(cfg: ModelConfig) -> tuple[Any, Any, dict[str, Any]]:
    """Load ``(model, processor, info)`` in eval mode; ``info`` is what ``meta.json`` records about the model."""
    source = resolve_source(cfg.name)  # before the heavy imports: a mistyped name fails at once
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    if source.hub_id is not None:
        check_hub_available(source.hub_id, cfg.revision)
    config = read_config(source, cfg)
    family = choose_family(cfg, source, config)
    device, dtype = choose_device_dtype(cfg, source)
    guarded = sorted(set(cfg.extra) & GUARDED_KWARGS)
    if guarded:
        raise ModelLoadError(
            f"model.extra may not set {', '.join(guarded)}: use model.trust_remote_code / model.revision "
            "(weights load from safetensors only)"
        )
    common = {"revision": revision_for(source, cfg), "trust_remote_code": cfg.trust_remote_code}
    model_kwargs = {
        "config": config,
        "dtype": dtype if dtype == CHECKPOINT_DTYPE else getattr(torch, dtype),
        "use_safetensors": True,
        **common,
        **({"device_map": cfg.device_map} if cfg.device_map else {}),
        **({"attn_implementation": cfg.attn_implementation} if cfg.attn_implementation else {}),
        **cfg.extra,
    }
    try:
        processor = AutoProcessor.from_pretrained(source.location, **common)
        apply_pixel_bounds(cfg, family, processor)
        model = AutoModelForImageTextToText.from_pretrained(source.location, **model_kwargs)
    except OSError as err:
        raise ModelLoadError(f"cannot load {source.location}: {err}") from err
    if cfg.device_map is None:
        model = model.to(device)
    model.eval()
    ensure_chat_template(processor, family)
    ensure_pad_token(processor)
    loaded = str(next(model.parameters()).dtype).removeprefix("torch.")
    return model, processor, describe(source, cfg, family, loaded, model)


def ensure_chat_template(processor: Any, family: str) -> None:
    """Give the processor a chat template when it has none: its tokenizer's, else the family record's file.

    The InstructBLIP processor drops its template on reload (the tokenizer keeps it), and the Salesforce
    checkpoints ship none at all: they take the instruction as plain text, which fgvlm's instructblip template
    renders, so real and tiny InstructBLIP models are prompted the same way.
    """
    if getattr(processor, "chat_template", None):
        return
    tokenizer = getattr(processor, "tokenizer", None)
    template = getattr(tokenizer, "chat_template", None)
    record = get_family(family)
    if template is None and record.template is not None:
        template = read_template(record.template)
    processor.chat_template = template
    if tokenizer is not None and template is not None:
        tokenizer.chat_template = template


def describe(source: ModelSource, cfg: ModelConfig, family: str, dtype: str, model: Any) -> dict[str, Any]:
    """name, hub id + revision (the resolved commit when known) or local path + content fingerprint, and the rest."""
    from fgvlm.runs import fingerprint_path

    local = source.local_path
    commit = getattr(model.config, "_commit_hash", None) if source.hub_id is not None else None
    return {
        "name": cfg.name,
        "hub_id": source.hub_id,
        "revision": (cfg.revision or commit) if source.hub_id is not None else None,
        "local_path": str(local) if local is not None else None,
        "fingerprint": fingerprint_path(local) if local is not None else None,
        "family": family,
        "dtype": dtype,
        "device": str(model.device),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }


PAD_FALLBACKS = ("eos_token", "unk_token")
"""Tokens a tokenizer without a pad token pads with, in this order (as Llama/Mistral-based processors do)."""


def ensure_pad_token(processor: Any) -> str | None:
    """Give a tokenizer without a pad token one, so batches can be padded; the name of the token used, or None.

    Many Llama/Mistral-based checkpoints ship no pad token, and padding a batch then fails with "Asking to pad but
    the tokenizer does not have a padding token". Padding is masked out by the attention mask, so any existing
    token works; like the model's own processors, fgvlm uses the eos token, else the unk token. Only the processor
    this loader just created is changed.
    """
    tokenizer = getattr(processor, "tokenizer", processor)
    if tokenizer.pad_token is not None:
        return None
    for name in PAD_FALLBACKS:
        token = getattr(tokenizer, name, None)
        if token is not None:
            tokenizer.pad_token = token
            return name
    raise ModelLoadError(
        f"the tokenizer of this model has no pad, eos or unk token to pad batches with; set tokenizer.pad_token "
        f"({type(tokenizer).__name__})"
    )


def load_backend(cfg: ModelConfig) -> VLMBackend:
    """``load_model`` wrapped in the family's backend (generate / rank / embed)."""
    from fgvlm.models.families import backend_class

    model, processor, info = load_model(cfg)
    return backend_class(info["family"])(model, processor, info)


def create_backend(model_cfg: ModelConfig, group: Any = None) -> VLMBackend:
    """The backend for ``model_cfg``: a checkpoint-free one by name (``dummy``), else ``load_backend``.

    Under data parallelism on GPUs (``group``: a ``fgvlm.distributed.ProcessGroup`` of several processes) each
    process takes the GPU of its local rank.
    """
    from fgvlm.registry import import_object

    if model_cfg.name in LOCAL_BACKENDS:
        return import_object(LOCAL_BACKENDS[model_cfg.name])(**model_cfg.extra)
    if group is not None and group.world_size > 1 and model_cfg.device is None and model_cfg.device_map is None:
        import torch

        if torch.cuda.is_available():
            model_cfg = dataclasses.replace(model_cfg, device=f"cuda:{group.local_rank}")
    return load_backend(model_cfg)
