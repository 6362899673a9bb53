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

from fgvlm.runs import RunDir, finish_run
from fgvlm.sft.config import SFTConfig
from fgvlm.sft.setup import CHECKPOINTS, TRAIN_LOG, Setup, load_setup


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


def run_sft(cfg: SFTConfig, out: str | Path, *, resume: bool = True) -> dict[str, Any]:
    """Fine-tune ``cfg.model`` into run directory ``out``; returns the final evaluation's metrics.

    The run lifecycle is ``fgvlm.runs.start_run``'s: a complete run's metrics are returned as they are, a partial
    one continues from its newest checkpoint, another config is refused naming the keys, ``resume=False`` moves an
    old directory aside and starts over.
    """
    from fgvlm.sft.objectives import objective_class
    from fgvlm.sft.outputs import finish

    check_launcher()
    started = time.time()
    cfg = dataclasses.replace(cfg, resume=resume)
    run, stored, group = ordered_start(cfg, out, resume)
    if stored is not None:
        group.close()
        return stored
    objective_type = objective_class(cfg.objective)
    setup = load_setup(cfg, run, packing=cfg.packing and objective_type.packing)
    objective = objective_type(setup)
    objective.prepare()
    objective.check_samples()
    trainer, best = train(setup, objective, resume)
    metrics = finish(setup, objective, trainer, best, started)
    if trainer.is_world_process_zero():
        finish_run(run, started)
    group.barrier()
    group.close()  # a gloo group left open keeps threads that can abort the process at exit
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


def ordered_start(cfg: SFTConfig, out: str | Path, resume: bool) -> tuple[RunDir, dict[str, Any] | None, Any]:
    """The run, a complete run's stored metrics (else None) and the process group (closed by the caller at the end):
    ``fgvlm.runs.ordered_start_run``, the one way every kind opens a run (rank 0 decides skip, resume, refuse or
    start over, then tells the other ranks).

    Under several processes this joins the process group the Trainer then uses (gloo on CPU, NCCL on GPUs, the
    Trainer's 1,800 s timeout; accelerate takes over a group that exists); a single process opens the run alone.
    """
    from fgvlm.distributed import ProcessGroup
    from fgvlm.runs import ordered_start_run

    group = ProcessGroup()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        device = cfg.model.device or ("cuda" if torch.cuda.is_available() else "cpu")
        group = ProcessGroup.from_env("nccl" if device.startswith("cuda") else "gloo", timeout_s=1800)
    opened = ordered_start_run(out, cfg, resume=resume, group=group)
    return opened.run, opened.stored, group


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


def train(setup: Setup, objective: Any, resume: bool) -> tuple[Any, dict[str, Any] | None]:
    """Run (or continue) the Trainer on the objective; returns it and the best validation step's record (or None)."""
    from transformers.integrations import TensorBoardCallback

    from fgvlm.sft.setup import RecordList
    from fgvlm.sft.trainer import SFTMonitor, SFTTrainer, truncate_log, use_training_progress

    cfg, run = setup.cfg, setup.run
    device = str(setup.backend.device)
    trainer = SFTTrainer(
        model=objective.training_model,
        args=training_arguments(cfg, run, device),
        train_dataset=RecordList(setup.train_records),
        data_collator=objective.collator,
        objective=objective,
    )
    checkpoint = last_checkpoint(run / CHECKPOINTS)
    if trainer.is_world_process_zero():  # before the monitor reads best/: a best step after the checkpoint is gone
        truncate_log(run / TRAIN_LOG, int(Path(checkpoint).name.rsplit("-", 1)[1]) if checkpoint else 0)
    monitor = SFTMonitor(run.path, objective.validate, cfg.train.eval_every, extra_keys=objective.log_keys)
    trainer.callback_handler.callbacks.insert(1, monitor)  # before TensorBoard: it sees the validation numbers
    for callback in objective.callbacks():  # before the monitor: the numbers they log reach train_log.jsonl
        trainer.callback_handler.callbacks.insert(1, callback)
    use_training_progress(trainer)  # after the monitor: the bar shows the validation accuracy it adds to a log
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            callback.logging_dir = str(run / "tb")
    trainer.train(resume_from_checkpoint=checkpoint)
    return trainer, monitor.best
