"""``run_sft(cfg, out, *, resume=True)``: fine-tune a VLM into a run directory (the kind "sft", CLI ``fgvlm sft``).

The run directory holds ``config.yaml``, ``meta.json``, ``train_log.jsonl``, ``tb/`` (TensorBoard),
``checkpoints/checkpoint-N/`` (resumable: trainable weights, optimizer, scheduler, RNG states, data position),
``best/`` (trainable weights of the best validation step), ``model/`` (the plain fine-tuned checkpoint, LoRA
merged, with its processor and chat template: ``fgvlm eval --model RUN/model`` and ``fgvlm head train --model
RUN/model`` load it), the final evaluation's ``metrics.json`` / ``predictions.jsonl`` / ``confusion.json`` (the
full evaluation run is kept in ``eval-<split>/``), head files for ``objective: classify``, and ``done.json`` last.

Resume: rerunning the same command continues from the newest checkpoint (the Trainer restores weights, optimizer,
scheduler, RNG and data position; on CPU with a fixed seed the final weights equal an uninterrupted run's); a
changed config is refused naming the keys; a finished run is reported, not retrained.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from fgvlm.runs import RunDir, finish_run, start_run
from fgvlm.sft.config import MIXCUT_TASK, SFTConfig

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


def training_arguments(cfg: SFTConfig, run: RunDir, device: str) -> Any:
    import torch
    from transformers import TrainingArguments

    train = cfg.train
    on_gpu = device.startswith("cuda")
    bf16 = train.bf16 if train.bf16 is not None else on_gpu and torch.cuda.is_bf16_supported()
    return TrainingArguments(
        output_dir=str(run / CHECKPOINTS),
        max_steps=train.max_steps,
        per_device_train_batch_size=train.per_device_batch_size,
        gradient_accumulation_steps=train.grad_accum,
        learning_rate=train.lr,
        lr_scheduler_type=train.scheduler,
        warmup_steps=train.warmup_ratio if train.warmup_ratio > 0 else 0,
        weight_decay=train.weight_decay,
        max_grad_norm=train.max_grad_norm,
        activation_checkpointing=train.gradient_checkpointing,
        bf16=bool(bf16),
        use_cpu=not on_gpu,
        seed=train.seed,
        data_seed=train.seed,
        logging_steps=train.log_every,
        save_strategy="steps",
        save_steps=train.save_every,
        save_total_limit=train.save_total_limit,
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        remove_unused_columns=False,
        dataloader_num_workers=train.num_workers,
        eval_strategy="no",
    )


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
    classify: Any = None


def _load(cfg: SFTConfig, run: RunDir) -> Setup:
    """Model, processor, data, collator and the validation backend on the model being trained."""
    import torch

    from fgvlm.data import create_dataset
    from fgvlm.models.families import backend_class
    from fgvlm.models.loading import load_model
    from fgvlm.sft.collator import SFTCollator, apply_prompt_format
    from fgvlm.sft.data import instruction_records
    from fgvlm.sft.modeling import base_model, prepare_model

    torch.manual_seed(cfg.train.seed)
    if cfg.train.num_threads is not None:
        torch.set_num_threads(cfg.train.num_threads)
    dataset = create_dataset(cfg.data)
    model, processor, info = load_model(cfg.model)
    family = info["family"]
    apply_prompt_format(processor, family, cfg.prompt_format)
    collator = SFTCollator(
        processor,
        family,
        encoder_decoder=family == "instructblip-t5",
        mix_loss=cfg.mixcut.loss,
        max_length=cfg.max_length,
        model_name=cfg.model.name,
    )
    mixed = MIXCUT_TASK in cfg.tasks  # mixed images go to files, not memory (thousands of full-size images)
    out_dir = run / "instructions" if mixed else None
    train_records = instruction_records(cfg, dataset, cfg.train_split, family, cfg.limit, out_dir)
    val_split = cfg.val_split if cfg.val_split in dataset.split_names else None
    val_limit = min(x for x in (cfg.limit, cfg.train.eval_limit, 1 << 62) if x is not None)
    val_records = dataset.split(val_split).records[:val_limit] if val_split else []
    if cfg.objective == "generate":
        check_lengths(collator, train_records)
    model = prepare_model(model, cfg, family)
    if cfg.packing and cfg.objective == "generate":
        from fgvlm.sft.packing import supports_packing

        if supports_packing(family):  # other families pad (their attention needs a padding mask)
            collator.packing_model = model
    backend = backend_class(family)(base_model(model), processor, info)
    return Setup(cfg, run, model, processor, info, family, dataset, backend, train_records, val_records, collator)


def check_lengths(collator: Any, records: list) -> None:
    """Encode every training record once before training: a too-long sample is refused here, naming its id."""
    from fgvlm.progress import track

    for record in track(records, description="checking samples", transient=True):
        collator.encode_record(record)


def generate_validator(setup: Setup) -> Any:
    """Validation accuracy by ``rank`` of the eval task on the validation subset, with the model being trained."""
    from fgvlm.eval.scoring import TaskScorer
    from fgvlm.prompts import object_word

    cfg = setup.cfg
    options = {"object": object_word(cfg.data.dataset), **cfg.task_options.get(cfg.eval_task, {})}
    scorer = TaskScorer(cfg.eval_task, setup.dataset, setup.family, options, cfg.seed, "mean")
    split = setup.dataset.split(cfg.val_split) if setup.val_records else None

    def validate(_model: Any) -> dict[str, Any]:
        if split is None:
            return {}
        model = setup.backend.model
        was_training = model.training
        model.eval()
        try:
            records = []
            for start in range(0, len(setup.val_records), 8):
                samples = [split[i] for i in range(start, min(start + 8, len(setup.val_records)))]
                records += scorer.rank(setup.backend, samples)
        finally:
            model.train(was_training)
        n = max(1, len(records))
        top5 = sum(r["label"] in [c for c, _ in r["topk"]] for r in records) / n if scorer.reports_topk else None
        return {"val_accuracy": sum(r["pred"] == r["label"] for r in records) / n, "val_top5": top5}

    return validate


def run_sft(cfg: SFTConfig, out: str | Path, *, resume: bool = True) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` into run directory ``out``; returns the final evaluation's metrics.

    The run lifecycle is ``fgvlm.runs.start_run``'s: a complete run's metrics are returned as they are, a partial
    one continues from its newest checkpoint, another config is refused naming the keys, ``resume=False`` moves an
    old directory aside and starts over.
    """
    check_launcher()
    started = time.time()
    cfg = dataclasses.replace(cfg, resume=resume)
    run = ordered_start(cfg, out, resume)
    if run.complete:
        return run.read_results()
    setup = _load(cfg, run)
    if cfg.objective == "classify":
        from fgvlm.sft.outputs import setup_classify

        setup_classify(setup)
    trainer, best = train(setup, resume)
    from fgvlm.sft.outputs import finish

    metrics = finish(setup, trainer, best, started)
    if trainer.is_world_process_zero():
        finish_run(run, started)
    return metrics


def check_launcher() -> None:
    """Refuse FSDP and DeepSpeed ZeRO-3 launches (from the variables ``accelerate launch`` sets).

    ``fgvlm sft`` saves and reloads the trainable parameters itself (checkpoints, ``best/``, the final model); with
    sharded parameters each process holds only a slice of them.
    """
    from fgvlm.config import ConfigError

    def flag(name: str) -> bool:
        return os.environ.get(name, "false").lower() in ("true", "1", "yes")

    supported = (
        "fgvlm sft saves its trainable parameters itself, which needs them unsharded: it supports DDP (torchrun, "
        "configs/accelerate/ddp.yaml) and DeepSpeed ZeRO-2 (configs/accelerate/deepspeed-zero2.yaml)"
    )
    if flag("ACCELERATE_USE_FSDP"):
        raise ConfigError(f"FSDP (accelerate's distributed_type: FSDP) is not supported: {supported}")
    if not flag("ACCELERATE_USE_DEEPSPEED"):
        return
    stage = os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    config_file = os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE")
    if config_file and Path(config_file).is_file():  # a DeepSpeed config file decides over accelerate's zero_stage
        stage = json.loads(Path(config_file).read_text()).get("zero_optimization", {}).get("stage", stage)
    if str(stage) == "3":
        raise ConfigError(
            f"DeepSpeed ZeRO stage 3 (accelerate's deepspeed_config zero_stage, or zero_optimization.stage in "
            f"{config_file or 'the DeepSpeed config'}) is not supported: {supported}"
        )


def ordered_start(cfg: SFTConfig, out: str | Path, resume: bool) -> RunDir:
    """``start_run`` on rank 0 first (it may move an old run aside: --no-resume), then on the other ranks.

    Under several processes this joins the process group the Trainer would (accelerate's ``PartialState``, with
    the Trainer's default timeout) for one barrier; a single process just calls ``start_run``.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return start_run(out, cfg, resume=resume)
    from datetime import timedelta

    import torch
    from accelerate import PartialState

    device = cfg.model.device or ("cuda" if torch.cuda.is_available() else "cpu")
    state = PartialState(cpu=not device.startswith("cuda"), timeout=timedelta(seconds=1800))
    run = start_run(out, cfg, resume=resume) if state.is_main_process else None
    state.wait_for_everyone()
    return run if run is not None else start_run(out, cfg, resume=True)


def last_checkpoint(folder: Path) -> str | None:
    """The newest ``checkpoint-N`` in ``folder`` holding both ``trainer_state.json`` and the trainable weights.

    A checkpoint cut off mid-save lacks one of them and is passed over.
    """
    from fgvlm.sft.trainer import TRAINABLE_WEIGHTS

    if not folder.is_dir():
        return None
    steps = []
    for path in folder.glob("checkpoint-*"):
        number = path.name.rsplit("-", 1)[1]
        if number.isdigit() and (path / "trainer_state.json").is_file() and (path / TRAINABLE_WEIGHTS).is_file():
            steps.append((int(number), path))
    return str(max(steps)[1]) if steps else None


def train(setup: Setup, resume: bool) -> tuple[Any, dict[str, Any] | None]:
    """Run (or continue) the Trainer; returns it and the best validation step's record (or None)."""
    from transformers.integrations import TensorBoardCallback

    from fgvlm.progress import trainer_progress_callback
    from fgvlm.sft.classify import classify_accuracy
    from fgvlm.sft.trainer import SFTMonitor, SFTTrainer, truncate_log

    cfg, run = setup.cfg, setup.run
    classify = setup.classify
    device = str(setup.backend.device)
    if classify is not None:
        validate = lambda _m: classify_accuracy(classify.model, classify.collator, classify.val_records)  # noqa: E731
    else:
        validate = generate_validator(setup)
    trainer = SFTTrainer(
        model=classify.model if classify is not None else setup.model,
        args=training_arguments(cfg, run, device),
        train_dataset=RecordList(setup.train_records),
        data_collator=classify.collator if classify is not None else setup.collator,
        encoder_decoder=setup.family == "instructblip-t5",
        classify=classify is not None,
        head_lr=classify.head_lr if classify is not None else None,
    )
    checkpoint = last_checkpoint(run / CHECKPOINTS)
    if trainer.is_world_process_zero():  # before the monitor reads best/: a best step after the checkpoint is gone
        truncate_log(run / TRAIN_LOG, int(Path(checkpoint).name.rsplit("-", 1)[1]) if checkpoint else 0)
    monitor = SFTMonitor(run.path, validate, cfg.train.eval_every)
    trainer.callback_handler.callbacks.insert(1, monitor)  # before TensorBoard: it sees the validation numbers
    trainer.add_callback(trainer_progress_callback())  # a study runner's live view of the steps
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(run / "tb")
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer, monitor.best
