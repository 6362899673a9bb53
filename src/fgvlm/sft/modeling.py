"""Which parameters train (LoRA or full, frozen parts), and the saved model: LoRA merged, reloadable, verified.

Parts are the family record's module-name prefixes (vision tower, projector/connector, language model). ``method: full``
trains every parameter outside the frozen parts; ``method: lora`` puts PEFT adapters on the language model's
linear layers only (the family's pattern; PEFT's ``all-linear`` would also adapt the vision tower) and trains the
other unfrozen parts fully (the projector, by default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from fgvlm.config import ConfigError
from fgvlm.sft.config import SFTConfig, frozen_parts


class SFTSaveError(ConfigError):
    """A fine-tuned model that does not reload to the same function: the run refuses to call it done."""


def prepare_model(model: Any, cfg: SFTConfig, family: str) -> Any:
    """Set ``requires_grad`` by the freeze setting; wrap in PEFT LoRA for ``method: lora``; the model to train."""
    from fgvlm.models.families import get_family

    record = get_family(family)
    frozen = set(frozen_parts(cfg.freeze))
    if cfg.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules or record.lora_target_modules,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            model = get_peft_model(model, lora)  # freezes every base weight, adds adapters
        if not any(p.requires_grad for p in model.parameters()):
            raise ConfigError(f"lora.target_modules {lora.target_modules!r} matches no module of {cfg.model.name}")
        frozen.add("language")  # the language model trains through its adapters only
        base = model.get_base_model()
    else:
        base = model
    unknown = []
    for name, param in base.named_parameters():
        if "lora_" in name:
            continue
        part = record.part_of(name)
        if part is None:
            unknown.append(name)
        param.requires_grad = part is not None and part not in frozen
    if unknown:
        raise ConfigError(f"{family}: parameters outside the family record's parts: {unknown[:3]}")
    return model


def trainable_summary(model: Any) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable": trainable}


def base_model(model: Any) -> Any:
    """The ``...ForConditionalGeneration`` under a PEFT wrapper (adapters injected in place), else the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def merged_model(model: Any) -> Any:
    """The plain model to save: LoRA adapters merged into the weights (the PEFT wrapper removed)."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def save_model(model: Any, processor: Any, out: Path) -> None:
    """``out`` = config + weights (safetensors) + generation config + processor + chat template."""
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    tokenizer = getattr(processor, "tokenizer", None)
    template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
    if template and not (out / "chat_template.jinja").is_file():
        (out / "chat_template.jinja").write_text(template)


def verify_reload(model: Any, reloaded: Any, batch: dict[str, Any], tolerance: float = 1e-3) -> float:
    """Max |logit difference| of the saved model's reload vs the in-memory one on ``batch``; too large -> refuse."""
    inputs = {k: v for k, v in batch.items() if k not in ("loss_weights", "labels", "token_weights")}
    if getattr(model.config, "use_decoder_only_language_model", True) is False:  # InstructBLIP-T5: decoder input
        inputs["labels"] = batch["labels"]
    was_training = model.training
    model.eval()
    reloaded.eval()
    try:
        with torch.no_grad():
            a = model(**_to(inputs, model), use_cache=False).logits.float().cpu()
            b = reloaded(**_to(inputs, reloaded), use_cache=False).logits.float().cpu()
    finally:
        model.train(was_training)
    diff = (a - b).abs().max().item() if a.shape == b.shape else float("inf")
    scale = max(1.0, a.abs().max().item())
    if not diff <= tolerance * scale:
        raise SFTSaveError(
            f"the saved model does not reload to the trained one (max logit difference {diff:.3g}); refusing to "
            "mark the run done"
        )
    return diff


def _to(inputs: dict[str, Any], model: Any) -> dict[str, Any]:
    param = next(model.parameters())
    return {
        k: (v.to(param.device, param.dtype) if v.is_floating_point() else v.to(param.device)) if hasattr(v, "to") else v
        for k, v in inputs.items()
    }
