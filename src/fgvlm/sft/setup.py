"""What a fine-tuning run holds once loaded (``Setup``), and ``load_setup`` that builds it, for every objective.

``load_setup`` seeds, loads the dataset and the model (``fgvlm.models.loading``), applies the prompt format, builds
the instruction records of the train split (and the validation subset), prepares the model (freeze, LoRA) and the
generate collator (``SFTCollator``: what ``generate`` trains on and what the reload check of ``RUN/model`` runs),
and wraps the model being trained in its family's backend (validation ranks with it). The objective then builds
what it needs on top (``Objective.prepare``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from fgvlm.runs import RunDir
from fgvlm.sft.config import SFTConfig

CHECKPOINTS = "checkpoints"
MODEL_DIR = "model"
TRAIN_LOG = "train_log.jsonl"


class RecordList:
    """A map-style dataset of instruction records (the collator turns them into tensors)."""

    def __init__(self, records: list[Any]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Any:
        return self.records[index]


@dataclasses.dataclass
class Setup:
    """What the training and the final steps share."""

    cfg: SFTConfig
    run: RunDir
    model: Any
    processor: Any
    info: dict[str, Any]
    family: str
    dataset: Any
    backend: Any
    train_records: list
    val_records: list
    collator: Any

    @property
    def encoder_decoder(self) -> bool:
        """The family's language model is an encoder-decoder (its record says): the loss reads decoder logits."""
        from fgvlm.models.families import get_family

        return get_family(self.family).encoder_decoder

    def results_header(self, model: str, seconds: float) -> dict[str, Any]:
        """The shared metrics.json header of this run (``fgvlm.runs.HEADER_KEYS``)."""
        dataset = self.dataset
        return {
            "kind": "sft",
            "dataset": dataset.name,
            **dataset.protocol_header(),
            "split": self.cfg.eval_split,
            "model": model,
            "num_classes": dataset.num_classes,
            "seconds": round(seconds, 3),
        }


def load_setup(cfg: SFTConfig, run: RunDir, *, packing: bool = False) -> Setup:
    """Model, processor, data, the generate collator and the validation backend on the model being trained.

    ``packing``: the objective packs its rows (``Objective.packing``) and the config asks for it; the collator
    then packs padding-free where the family's record gives packed positions (other families pad).
    """
    import torch

    from fgvlm.data import create_dataset
    from fgvlm.models.families import backend_class, get_family
    from fgvlm.models.loading import load_model
    from fgvlm.sft.collator import SFTCollator, apply_prompt_format
    from fgvlm.sft.data import instruction_records
    from fgvlm.sft.modeling import base_model, prepare_model

    torch.manual_seed(cfg.train.seed)
    if cfg.train.num_threads is not None:
        torch.set_num_threads(cfg.train.num_threads)
    dataset = create_dataset(cfg.data)
    if int(os.environ.get("RANK", "0")) == 0:  # the data it trains on, up front: a resume on other data is refused
        run.write_meta(command="sft", seed=cfg.train.seed, dataset=dataset.describe())
    model, processor, info = load_model(cfg.model)
    family = info["family"]
    apply_prompt_format(processor, family, cfg.prompt_format)
    collator = SFTCollator(
        processor,
        family,
        encoder_decoder=get_family(family).encoder_decoder,
        mix_loss=cfg.mixcut.loss,
        max_length=cfg.max_length,
        model_name=cfg.model.name,
    )
    out_dir = run / "instructions" if cfg.mixed_images else None  # mixed images go to files: thousands of them
    train_records = instruction_records(cfg, dataset, cfg.train_split, family, cfg.limit, out_dir)
    val_split = cfg.val_split if cfg.val_split in dataset.split_names else None
    val_limit = min(x for x in (cfg.limit, cfg.train.eval_limit, 1 << 62) if x is not None)
    val_records = dataset.split(val_split).records[:val_limit] if val_split else []
    model = prepare_model(model, cfg, family)
    if packing and get_family(family).packing_positions is not None:
        collator.packing_model = model
    backend = backend_class(family)(base_model(model), processor, info)
    return Setup(cfg, run, model, processor, info, family, dataset, backend, train_records, val_records, collator)
