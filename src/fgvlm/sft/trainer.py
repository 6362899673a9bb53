"""``SFTTrainer``: ``transformers.Trainer`` with the objective's loss (answer positions only for generate), and the
run's monitor.

The language-model head runs only where a label is: decoder-only models get ``logits_to_keep`` as a boolean
``[B, L]`` mask of the positions whose next token is an answer token (transformers slices the hidden states before
``lm_head``), so no ``[B, L, V]`` logits are built for the prompt and the image tokens. Encoder-decoder models
(InstructBLIP-Flan-T5) decode the answer only, so their logits are the answer's already.

The loss is the weighted mean token NLL: ``sum_t w_t * nll_t / sum_t w_t`` with ``w_t`` the loss weight of the
token's sequence (1 for plain samples; ``lambda`` / ``1 - lambda`` for the two answers of a mixed image). With all
weights 1 it equals transformers' own loss for ``labels=...``. For a mixed-image pair whose answers have ``n_a``
and ``n_b`` tokens and summed NLLs ``S_a`` and ``S_b`` it is ``(lam * S_a + (1 - lam) * S_b) / (lam * n_a +
(1 - lam) * n_b)``: ``lam * NLL(a) + (1 - lam) * NLL(b)`` per weighted token.

``SFTMonitor`` validates every ``eval_every`` steps with the model being trained, writes ``train_log.jsonl`` (the
shared schema: step, epoch, train_loss, lr, val_accuracy, val_top5, val_loss, plus grad_norm) and feeds the same
numbers to TensorBoard, and keeps the trainable weights of the best validation step.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.progress import ProgressColumn
from rich.text import Text
from transformers import Trainer, TrainerCallback

from fgvlm.runs import RunDir, TrainLogger
from fgvlm.sft.collator import IGNORE

TRAIN_LOG = "train_log.jsonl"
BEST_DIR = "best"
BEST_WEIGHTS = "trainable.safetensors"
BEST_INFO = "best.json"
TRAINABLE_WEIGHTS = "trainable.safetensors"
"""A checkpoint's weights: the trainable tensors by name."""


def answer_positions(labels: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` bool: positions whose NEXT token carries loss (their logits predict an answer token)."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE
    return keep


def token_weights(weights: torch.Tensor, labels: torch.Tensor, keep: torch.Tensor, shift: bool) -> torch.Tensor:
    """The loss weight of every kept token: its sequence's (row's) weight, or per packed segment when given."""
    per_token = weights.to(labels.device)[:, None].expand(labels.shape) if weights.dim() == 1 else weights
    return per_token[keep] if not shift else per_token[:, 1:][keep[:, :-1]]


def answer_loss(model: Any, inputs: dict[str, Any], encoder_decoder: bool = False) -> torch.Tensor:
    """Weighted mean NLL of the answer tokens; ``inputs`` is a collator batch (``labels``, ``loss_weights``).

    Packed batches may carry ``token_weights`` ``[1, T]`` (the weight of each token's sample) instead.
    """
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    weights = inputs.pop("token_weights", None)
    sequence_weights = inputs.pop("loss_weights", None)
    if weights is None:
        weights = sequence_weights if sequence_weights is not None else torch.ones(labels.shape[0])
    if encoder_decoder:
        logits = model(**inputs, labels=labels, use_cache=False).logits
        keep = labels != IGNORE
        logits, targets = logits[keep], labels[keep]
        token_w = token_weights(weights, labels, keep, shift=False)
    else:
        keep = answer_positions(labels)
        logits = model(**inputs, logits_to_keep=keep, use_cache=False).logits
        if logits.dim() == 3:  # a model that ignored logits_to_keep: select the positions here
            logits = logits[keep]
        targets = labels[:, 1:][keep[:, :-1]]
        token_w = token_weights(weights, labels, keep, shift=True)
    nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
    token_w = token_w.to(nll.device, nll.dtype)
    return (token_w * nll).sum() / token_w.sum().clamp(min=1e-12)


class SFTTrainer(Trainer):
    """Trainer whose loss and optimizer groups are the objective's (``fgvlm.sft.objectives``); without an
    objective, the generate objective's ``answer_loss`` (what the benchmarks time)."""

    def __init__(self, *args: Any, objective: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.objective = objective
        # Our loss is a per-micro-batch mean; let the Trainer divide by the accumulation steps itself.
        self.model_accepts_loss_kwargs = False

    def create_optimizer(self, model: Any = None) -> Any:
        """AdamW as the Trainer builds it, or over the objective's parameter groups when it has its own."""
        model = model or self.model
        groups = None if self.objective is None else self.objective.optimizer_groups(model, self.args.learning_rate)
        if groups is None or self.optimizer is not None:
            return super().create_optimizer(model)
        self.optimizer = torch.optim.AdamW(
            groups,
            lr=self.args.learning_rate,
            weight_decay=self.args.weight_decay,
            betas=(self.args.adam_beta1, self.args.adam_beta2),
            eps=self.args.adam_epsilon,
        )
        return self.optimizer

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        loss = answer_loss(model, inputs) if self.objective is None else self.objective.loss(model, inputs)
        return (loss, None) if return_outputs else loss

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Checkpoints hold the trainable tensors only (adapters AND fully trained parts such as the projector,
        which a PEFT adapter file would miss); the run's final model is written separately, merged."""
        from safetensors.torch import save_file

        output_dir = Path(output_dir or self.args.output_dir)
        if self.args.should_save:
            output_dir.mkdir(parents=True, exist_ok=True)
            save_file(trainable_state(self.model), str(output_dir / TRAINABLE_WEIGHTS))
        return None

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        load_trainable(model or self.model, Path(resume_from_checkpoint) / TRAINABLE_WEIGHTS)
        return None


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters by name (detached, contiguous CPU copies)."""
    return {name: p.detach().cpu().contiguous().clone() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, path: Path) -> None:
    """Load trainable tensors saved by ``trainable_state``; every saved name must exist in ``model``."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    params = dict(model.named_parameters())
    missing = sorted(set(state) - set(params))
    if missing:
        raise ValueError(f"{path}: tensors {missing[:3]} are not parameters of the model being trained")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))


class SFTMonitor(TrainerCallback):
    """Validation every ``eval_every`` steps, ``train_log.jsonl`` lines, and the best step's trainable weights.

    Placed before the TensorBoard callback, so the validation numbers it adds to a log reach TensorBoard too.
    """

    def __init__(
        self,
        run_dir: Path,
        validate: Callable[[Any], dict[str, Any]],
        eval_every: int,
        log_name: str = "train_log.jsonl",
        extra_keys: tuple[str, ...] = (),
    ):
        self.run_dir = Path(run_dir)
        self.extra_keys = extra_keys
        """The objective's own numbers copied from a log into train_log.jsonl (``Objective.log_keys``)."""
        self.validate = validate
        self.eval_every = eval_every
        self.pending: dict[str, Any] | None = None
        info = self.run_dir / BEST_DIR / BEST_INFO
        self.best = json.loads(info.read_text()) if info.is_file() else None

    def on_step_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> Any:
        step = state.global_step
        if step % self.eval_every == 0 or step >= state.max_steps:
            self.pending = self.validate(model)
            control.should_log = True
            if state.is_world_process_zero:
                self._keep_best(step, model)
        return control

    def _keep_best(self, step: int, model: Any) -> None:
        from safetensors.torch import save_file

        accuracy = self.pending.get("val_accuracy")
        if accuracy is None or (self.best is not None and accuracy <= self.best["val_accuracy"]):
            return
        folder = self.run_dir / BEST_DIR
        folder.mkdir(exist_ok=True)
        save_file(trainable_state(model), str(folder / BEST_WEIGHTS))
        self.best = {"step": step, "val_accuracy": accuracy, "val_top5": self.pending.get("val_top5")}
        (folder / BEST_INFO).write_text(json.dumps(self.best) + "\n")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
        logs = logs if logs is not None else {}
        if "loss" not in logs and self.pending is None:
            return control  # the end-of-training summary (train_runtime, ...)
        values = {"epoch": state.epoch, "train_loss": logs.get("loss"), "lr": logs.get("learning_rate")}
        if self.pending is not None:
            values.update(self.pending)
            logs.update({k: v for k, v in self.pending.items() if isinstance(v, (int, float))})
            self.pending = None
        values["grad_norm"] = logs.get("grad_norm")
        values.update({key: logs[key] for key in self.extra_keys if key in logs and key not in values})
        TrainLogger(RunDir(self.run_dir), enabled=state.is_world_process_zero).log(state.global_step, **values)
        return control


class StepRate(ProgressColumn):
    """A rich column: optimizer steps per second (seconds per step when slower than one a second)."""

    def render(self, task: Any) -> Text:
        speed = task.speed
        if not speed:
            return Text("-- step/s", style="progress.data.speed")
        return Text(f"{speed:.2f} step/s" if speed >= 1 else f"{1 / speed:.1f} s/step", style="progress.data.speed")


class TrainingProgress(TrainerCallback):
    """One progress bar for the optimizer steps (done/total, rate, elapsed, ETA) with the last loss, learning rate
    and validation accuracy beside it, on the main process; it replaces the Trainer's tqdm bar and printed log
    dicts (the numbers stay in ``train_log.jsonl`` and TensorBoard)."""

    def __init__(self, description: str = "train", enabled: bool = True):
        self.description = description
        self.enabled = enabled
        self.bar: Any = None
        self.task: Any = None
        self.fields = {"loss": "", "lr": "", "val": ""}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        from fgvlm.progress import ReportingProgress  # a study runner sees the steps too

        if not (self.enabled and state.is_world_process_zero):
            return control
        self.bar = ReportingProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            StepRate(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[loss]} {task.fields[lr]} {task.fields[val]}"),
        )
        self.bar.start()
        self.task = self.bar.add_task(
            self.description, total=state.max_steps, completed=state.global_step, **self.fields
        )
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.bar is not None:
            self.bar.update(self.task, completed=state.global_step)
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
        if self.bar is None or not logs:
            return control
        if "loss" in logs:
            self.fields["loss"] = f"loss {logs['loss']:.4f}"
        if "learning_rate" in logs:
            self.fields["lr"] = f"lr {logs['learning_rate']:.2e}"
        if logs.get("val_accuracy") is not None:
            self.fields["val"] = f"val acc {logs['val_accuracy']:.3f}"
        self.bar.update(self.task, **self.fields)
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
        return control


def use_training_progress(trainer: Any, enabled: bool = True) -> TrainingProgress:
    """Swap the Trainer's tqdm bar and printed log dicts for ``TrainingProgress``."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    progress = TrainingProgress(enabled=enabled)
    trainer.add_callback(progress)
    return progress


def truncate_log(path: Path, step: int) -> None:
    """Drop ``train_log.jsonl`` lines after ``step`` (a resume from that checkpoint logs them again; 0: all)."""
    from fgvlm.runfiles import truncate_jsonl

    if not path.is_file():
        return
    truncate_jsonl(path, step)  # the one atomic JSONL rewrite of fgvlm.runfiles
    info = path.parent / BEST_DIR / BEST_INFO
    if info.is_file() and json.loads(info.read_text())["step"] > step:  # the best step was not checkpointed
        shutil.rmtree(path.parent / BEST_DIR)
