"""Padding-free packing: several training samples in one row, exactly (families whose record has ``packing_positions``).

A batch of B padded rows spends compute on pad tokens (and on the longest sample's length B times); a packed batch is
one row of the samples laid end to end, ``T = sum(L_i)`` tokens, no pads. The model keeps the samples apart from
the positions alone, so packed per-sample losses equal unpacked ones (``tests/test_sft_packing.py`` checks 1e-5):

- ``position_ids`` has shape ``(4, 1, T)``: row 0 holds the text positions restarting at 0 for every sample (the
  attention mask builder cuts the row into independent causal blocks where they restart), rows 1-3 the sample's own
  M-RoPE positions (temporal, height, width). The family record's ``packing_positions`` function computes them
  (Qwen3-VL and Qwen2.5-VL: ``fgvlm.models.families.qwen3_vl.packed_positions``).
- ``attention_mask`` is None: a 2-D mask would switch the packed-block detection off.
- The forward must get ``use_cache=False``. With the config's default ``use_cache=True`` a cache is built, the mask
  builder skips packed-sequence detection when a cache exists, and the samples silently attend to each other. The
  caller passes it (the SFT trainer's loss does, for every batch); :func:`packed_forward` is
  ``model(**batch, use_cache=False)`` and refuses anything else. (The batch does not carry the flag itself, so that a
  caller passing ``use_cache=False`` explicitly does not get a duplicate keyword.)
- ``pixel_values``, ``image_grid_thw`` (and video tensors, ``mm_token_type_ids``) are concatenated in sample order:
  the vision tower already separates images by their grids.
- Samples with a ``loss_weight`` (the mixcut rule's lambda) give ``token_weights`` ``[1, T]``: each token carries its
  sample's weight (the trainer's loss reads it; :func:`packed_forward` keeps it away from the model).
- Each sample's first label is set to -100: in a row, the previous sample's last position would otherwise predict
  it; unpacked, the first token is never a target, so this keeps the two identical.

Other families pad (``run_sft`` asks :func:`supports_packing`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fgvlm.config import ConfigError
from fgvlm.models.helpers import unwrap_model

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100
LOSS_KEYS = ("token_weights", "loss_weights")
"""Batch entries for the loss, not for the model's forward."""
VISUAL_KEYS = ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw", "second_per_grid_ts")
"""Per-sample vision tensors, concatenated along dim 0 in sample order."""


class PackingError(ConfigError):
    """Packing asked of a model or samples it cannot serve (names the family, key or sample)."""


def supports_packing(family: str) -> bool:
    """True for the families whose attention can be split by position ids alone (record's ``packing_positions``)."""
    from fgvlm.models.families import get_family

    return get_family(family).packing_positions is not None


def position_function(model: Any) -> Callable[..., torch.Tensor]:
    """The ``packing_positions`` function of ``model``'s family (from its config; ``model`` may be PEFT-wrapped)."""
    from fgvlm.models.families import UnknownFamilyError, all_families, family_for_config
    from fgvlm.registry import import_object

    config = getattr(unwrap_model(model), "config", None)
    model_type = getattr(config, "model_type", None)
    try:
        record = family_for_config(config) if config is not None else None
    except UnknownFamilyError:
        record = None
    if record is None or record.packing_positions is None:
        packing = [name for name, r in all_families().items() if r.packing_positions is not None]
        raise PackingError(
            f"padding-free packing supports {', '.join(packing)} only, not model type {model_type!r}; "
            "set packing: false for this model"
        )
    return import_object(record.packing_positions)


def _row(sample: dict[str, Any], key: str, index: int) -> torch.Tensor:
    """``sample[key]`` as a 1-D tensor (a ``[1, L]`` processor output is accepted)."""
    tensor = sample[key]
    if tensor.dim() == 2 and tensor.shape[0] == 1:
        tensor = tensor[0]
    if tensor.dim() != 1:
        raise PackingError(f"sample {index}: {key} must have shape [L] or [1, L], got {tuple(tensor.shape)}")
    return tensor


def token_types(sample: dict[str, Any], config: Any, index: int) -> torch.Tensor:
    """The sample's ``mm_token_type_ids`` (text 0, image 1, video 2), or derived from its ids if it has none."""
    if sample.get("mm_token_type_ids") is not None:
        return _row(sample, "mm_token_type_ids", index)
    ids = _row(sample, "input_ids", index)
    types = (ids == config.image_token_id).long()
    video = getattr(config, "video_token_id", None)
    return types if video is None else types + 2 * (ids == video).long()


def sample_positions(model: Any, sample: dict[str, Any], index: int = 0) -> torch.Tensor:
    """``(4, 1, L)`` positions of one unpadded sample: text positions ``0..L-1`` over its M-RoPE positions."""
    ids = _row(sample, "input_ids", index)
    grids = {key: sample[key] for key in ("image_grid_thw", "video_grid_thw") if sample.get(key) is not None}
    config = unwrap_model(model).config
    return position_function(model)(model, ids, token_types(sample, config, index), grids)


def check_sample(sample: dict[str, Any], index: int) -> None:
    """Refuse what packing would silently get wrong: missing keys, mismatched lengths, padded samples."""
    for key in ("input_ids", "labels"):
        if sample.get(key) is None:
            raise PackingError(f"sample {index} has no {key!r}; pack_samples needs input_ids and labels")
    length = _row(sample, "input_ids", index).numel()
    for key in ("labels", "attention_mask", "mm_token_type_ids"):
        count = None if sample.get(key) is None else _row(sample, key, index).numel()
        if count is not None and count != length:
            raise PackingError(f"sample {index}: {key} has {count} tokens, input_ids {length}")
    mask = sample.get("attention_mask")
    if mask is not None and not bool(_row(sample, "attention_mask", index).all()):
        raise PackingError(f"sample {index} is padded (attention_mask has zeros); pack unpadded samples")


def pack_samples(samples: list[dict[str, Any]], model: Any) -> dict[str, Any]:
    """One packed row from per-sample encodings, for ``model(**batch)`` (see the module docstring for why).

    Each sample: ``input_ids`` and ``labels`` (``[L]`` or ``[1, L]``, -100 on the prompt), the processor's vision
    tensors, and ``mm_token_type_ids`` when the processor gives it (other keys are ignored). Returns
    ``input_ids``/``labels`` ``[1, T]``, ``position_ids`` ``(4, 1, T)``, ``attention_mask=None``, the vision tensors
    concatenated, and ``token_weights`` ``[1, T]`` when the samples have a ``loss_weight``. Run it with
    ``use_cache=False`` (:func:`packed_forward`).
    """
    import torch

    if not samples:
        raise PackingError("pack_samples got no samples")
    position_function(model)  # refuses a family that pads before any sample is read
    for index, sample in enumerate(samples):
        check_sample(sample, index)
    labels = []
    for index, sample in enumerate(samples):
        row = _row(sample, "labels", index).clone()
        row[0] = IGNORE_INDEX  # never a target unpacked; packed, the previous sample's last position would predict it
        labels.append(row)
    batch: dict[str, Any] = {
        "input_ids": torch.cat([_row(s, "input_ids", i) for i, s in enumerate(samples)])[None],
        "labels": torch.cat(labels)[None],
        "position_ids": torch.cat([sample_positions(model, s, i) for i, s in enumerate(samples)], dim=2),
        "attention_mask": None,
    }
    if all("loss_weight" in s for s in samples):
        weights = [torch.full((len(row),), float(s["loss_weight"])) for s, row in zip(samples, labels, strict=True)]
        batch["token_weights"] = torch.cat(weights)[None]
    if all(s.get("mm_token_type_ids") is not None for s in samples):
        batch["mm_token_type_ids"] = torch.cat([_row(s, "mm_token_type_ids", i) for i, s in enumerate(samples)])[None]
    for key in VISUAL_KEYS:
        present = [s[key] for s in samples if s.get(key) is not None]
        if present:
            batch[key] = torch.cat(present, dim=0)
    return batch


def packed_forward(model: Any, batch: dict[str, Any], **kwargs: Any) -> Any:
    """``model(**batch, use_cache=False)`` for a packed batch, refusing the settings that break packing.

    A cache (``use_cache`` True or left to the config's default) or a 2-D attention mask would make the samples
    attend to each other with no error; this helper forbids both. Loss-only entries (``token_weights``) are dropped.
    """
    merged = {key: value for key, value in {**batch, **kwargs}.items() if key not in LOSS_KEYS}
    if merged.get("use_cache") is not False and "use_cache" in merged:
        raise PackingError(f"a packed batch needs use_cache=False, got use_cache={merged['use_cache']!r}")
    if merged.get("attention_mask") is not None:
        raise PackingError("a packed batch needs attention_mask=None (a 2-D mask turns packed-sequence detection off)")
    positions = merged.get("position_ids")
    if positions is None or positions.dim() != 3 or positions.shape[0] != 4:
        shape = None if positions is None else tuple(positions.shape)
        raise PackingError(f"a packed batch needs position_ids of shape (4, 1, T), got {shape}")
    merged["use_cache"] = False
    return model(**merged)


def sample_starts(position_ids: torch.Tensor) -> list[int]:
    """Where each sample starts in a packed row: the columns whose text position (row 0) is 0."""
    return (position_ids[0, 0] == 0).nonzero().flatten().tolist()


def per_sample_nll(logits: torch.Tensor, labels: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Summed next-token NLL of each packed sample ``[num_samples]`` from ``[1, T, V]`` logits and ``[1, T]`` labels.

    Position t predicts label t+1; the labels of every sample's first token are -100, so no loss crosses a boundary.
    """
    import torch

    logits = logits[0, :-1]
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the softmax in half precision loses the small probabilities
    token_nll = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=IGNORE_INDEX, reduction="none")
    starts = sample_starts(position_ids)
    segment = torch.zeros(labels.shape[1], dtype=torch.long, device=labels.device)
    segment[starts[1:]] = 1
    segment = segment.cumsum(0)[1:]  # segment of each predicted label
    return torch.zeros(len(starts), dtype=token_nll.dtype, device=token_nll.device).index_add(0, segment, token_nll)
