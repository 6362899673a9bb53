"""The LoRA adapter alone, from a LoRA run's final trainable weights, checked against the run's merged model.

A LoRA run saves its trainable tensors (adapters AND fully trained parts such as the projector, under PEFT's
parameter names) in ``best/trainable.safetensors`` and ``checkpoints/checkpoint-N/trainable.safetensors``. The adapter
is written in PEFT's own format: ``adapter_config.json`` (``LoraConfig`` with the run's r / alpha / dropout, the exact
adapted modules as ``target_modules`` and the fully trained ones as ``modules_to_save``) and
``adapter_model.safetensors`` (PEFT's saved names: the adapter name dropped). It is then loaded back with
``PeftModel.from_pretrained`` on the base model, merged, and compared with ``RUN/model`` weight by weight: an adapter
that does not rebuild the published model is refused, never uploaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fgvlm.publish.sources import PublishError

PEFT_PREFIX = "base_model.model."
ADAPTER_NAME = "default"
TRAINABLE = "trainable.safetensors"
TOLERANCE = {"float32": 1e-5, "float16": 2e-3, "bfloat16": 1.6e-2}
"""Largest relative weight difference accepted per dtype (merging in a lower precision rounds)."""


def final_trainable(run_dir: Path, config: dict[str, Any]) -> Path:
    """The trainable weights that became ``RUN/model``: ``best/`` with ``train.final: best``, else the newest
    checkpoint's."""
    if (config.get("train") or {}).get("final") == "best" and (run_dir / "best" / TRAINABLE).is_file():
        return run_dir / "best" / TRAINABLE
    steps = []
    for path in (run_dir / "checkpoints").glob("checkpoint-*"):
        number = path.name.rsplit("-", 1)[1]
        if number.isdigit() and (path / TRAINABLE).is_file():
            steps.append((int(number), path / TRAINABLE))
    if not steps:
        raise PublishError(f"{run_dir}: no checkpoints/checkpoint-N/{TRAINABLE} to take the adapter from")
    return max(steps)[1]


def adapter_state(trained: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """PEFT-format tensors, the adapted module paths and the fully trained module paths, from trained names.

    ``vlm.base_model.model.M.lora_A.default.weight`` -> ``base_model.model.M.lora_A.weight`` (module M adapted);
    ``base_model.model.M.weight`` (trained fully) -> kept, M saved whole. Tensors outside the PEFT model (a
    classify head) are not part of the adapter.
    """
    state, adapted, saved = {}, set(), set()
    for name, tensor in trained.items():
        if PEFT_PREFIX not in name:
            continue
        inner = name[name.index(PEFT_PREFIX) + len(PEFT_PREFIX) :]
        if ".lora_" in inner:
            adapted.add(inner[: inner.index(".lora_")])
            state[PEFT_PREFIX + inner.replace(f".{ADAPTER_NAME}", "")] = tensor
        else:
            saved.add(inner.rsplit(".", 1)[0])
            state[PEFT_PREFIX + inner] = tensor
    if not adapted:
        raise PublishError("the run's trainable weights hold no LoRA tensors (lora_A / lora_B)")
    return state, sorted(adapted), sorted(saved)


def write_adapter(run_dir: Path, out: Path, base_model: str | None) -> None:
    """``out/adapter_config.json`` + ``out/adapter_model.safetensors``, verified against ``RUN/model``."""
    from peft import LoraConfig
    from safetensors.torch import load_file, save_file

    from fgvlm.config import load_yaml
    from fgvlm.publish.card import hub_model_id

    config = load_yaml(run_dir / "config.yaml")
    lora = config.get("lora") or {}
    state, adapted, saved = adapter_state(load_file(str(final_trainable(run_dir, config))))
    model_name = (config.get("model") or {}).get("name")
    peft_config = LoraConfig(
        r=lora.get("r", 16),
        lora_alpha=lora.get("alpha", 32),
        lora_dropout=lora.get("dropout", 0.0),
        target_modules=adapted,
        modules_to_save=saved or None,
        base_model_name_or_path=base_model or hub_model_id(model_name) or model_name,
    )
    out.mkdir(parents=True, exist_ok=True)
    peft_config.save_pretrained(str(out))
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "adapter_model.safetensors"), {"format": "pt"})
    verify_adapter(run_dir, out, config)


def verify_adapter(run_dir: Path, adapter_dir: Path, config: dict[str, Any]) -> float:
    """Base model + adapter, merged, must equal ``RUN/model``; returns the largest relative weight difference."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from fgvlm.config import from_dict
    from fgvlm.models.base import ModelConfig
    from fgvlm.models.loading import load_model

    model_cfg = from_dict(ModelConfig, {**(config.get("model") or {}), "device": "cpu"}, where="config.yaml model")
    base, _, _ = load_model(model_cfg)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    published = AutoModelForImageTextToText.from_pretrained(run_dir / "model", dtype="auto")
    expected = published.state_dict()
    worst = 0.0
    for name, tensor in merged.state_dict().items():
        if name not in expected:
            raise PublishError(f"{adapter_dir}: the merged adapter has {name}, which {run_dir}/model does not")
        want = expected[name].float()
        diff = (tensor.float() - want).abs().max().item() if tensor.numel() else 0.0
        worst = max(worst, diff / max(1.0, want.abs().max().item() if want.numel() else 1.0))
    dtype = str(next(iter(expected.values())).dtype).removeprefix("torch.")
    if not worst <= TOLERANCE.get(dtype, 1e-5):
        raise PublishError(
            f"{adapter_dir}: base + adapter does not rebuild {run_dir}/model (relative weight difference {worst:.3g}); "
            "not publishing the adapter"
        )
    return worst
