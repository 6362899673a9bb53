"""The one training loop: steps of a loss function, per-epoch evaluation, checkpoints, exact resume, logs, DDP.

What is trained is given as hooks. The CNN baseline (``fgvlm.train.cnn``) runs on it; classification heads
(``fgvlm.heads.training``) use their own small step loop instead, because they evaluate every N steps (not per
epoch) and their cached-feature and online modes must match step for step. The hooks:

- ``loss_fn(model, batch) -> (loss, items)``: forward one batch through ``model`` (DDP-wrapped when distributed);
- ``train_batches(epoch) -> iterable``: the batches of one epoch, in an order that depends only on the epoch
  (so a resumed run sees the same data as an uninterrupted one);
- ``evaluate(module) -> {name: value}``: validation metrics, called on every rank (it may gather across ranks);
- optionally an optimizer scheduler stepped per step and an EMA of the weights (``ema.module``, ``ema.update``).

Each epoch appends one line to ``train_log.jsonl`` (the shared schema of ``fgvlm.runs.TRAIN_LOG_KEYS``: step,
epoch, train_loss, lr, val_accuracy, val_top5, val_loss, then images, seconds and the best so far) and writes
TensorBoard scalars in ``tb/``, then saves the ``last`` checkpoint (and ``best`` when the watched metric improves)
with ``Checkpointer``. ``fit(resume=True)`` restores weights, optimizer, scheduler, grad scaler and every rank's RNG
state from ``last`` and continues at the next epoch: the result equals the uninterrupted run's. Only rank 0 writes
files.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from fgvlm.config import ConfigError
from fgvlm.distributed import ProcessGroup
from fgvlm.runfiles import truncate_jsonl
from fgvlm.runs import TRAIN_LOG, RunDir, train_log_record
from fgvlm.train.checkpoint import Checkpointer, capture_rng, restore_rng, state_tensors
from fgvlm.train.distributed import average_buffers

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
LOG_FILE = TRAIN_LOG


@dataclass
class LoopSettings:
    """How long to train and what to watch; the method's config fills it."""

    epochs: int
    """Epochs to run (an upper bound when ``max_steps`` is set)."""
    steps_per_epoch: int
    """Optimizer steps in one epoch (what ``train_batches`` yields); sets the schedule length and progress bar."""
    max_steps: int | None = None
    """Stop after this many optimizer steps in total, even mid-epoch."""
    best_metric: str | None = None
    """Evaluation metric to maximise for the ``best`` checkpoint (e.g. val_accuracy); None: no ``best``."""
    precision: str = "fp32"
    """fp32, or bf16/fp16 autocast (fp16 with a gradient scaler)."""
    grad_clip_norm: float | None = None
    """Clip the global gradient norm to this value before each step."""
    log_every_steps: int = 10
    """TensorBoard train loss / lr every N steps."""
    progress: bool = True
    """Show a rich progress bar (rank 0)."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be >= 1, got {self.steps_per_epoch}")

    @property
    def total_steps(self) -> int:
        full = self.epochs * self.steps_per_epoch
        return min(full, self.max_steps) if self.max_steps else full


@dataclass
class FitResult:
    """What ``fit`` leaves behind: per-epoch records, the final step, and which checkpoint is best."""

    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    best_tag: str = "last"
    best: dict[str, Any] | None = None
    finished: bool = True
    """False when ``stop_after_epoch`` cut the run off before the end of its schedule."""
    epochs_run: int = 0
    """Epochs trained by this call: the last ``epochs_run`` records of ``history`` (a resumed run's earlier epochs
    come from its log)."""


class TrainLoop:
    """Run ``settings.epochs`` epochs of ``loss_fn`` over ``train_batches`` with ``optimizer``; see the module doc."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, int]],
        train_batches: Callable[[int], Iterable[Any]],
        *,
        run_dir: RunDir,
        settings: LoopSettings,
        device: torch.device,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None,
        ema: Any | None = None,
        dist: ProcessGroup | None = None,
    ):
        self.model, self.optimizer, self.loss_fn, self.train_batches = model, optimizer, loss_fn, train_batches
        self.run_dir, self.settings, self.device = run_dir, settings, device
        self.scheduler, self.evaluate, self.ema = scheduler, evaluate, ema
        self.dist = dist or ProcessGroup()
        self.checkpoints = Checkpointer(run_dir.path)
        self.train_model = self._wrap_ddp(model)
        self.scaler = torch.amp.GradScaler(device.type, enabled=settings.precision == "fp16")
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.on_epoch: Callable[[dict[str, Any]], None] | None = None  # e.g. experiment trackers (rank 0 only)

    def _wrap_ddp(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.dist.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    @property
    def eval_module(self) -> torch.nn.Module:
        """The weights that are evaluated and saved as checkpoints: the EMA copy when EMA is on."""
        return self.ema.module if self.ema is not None else self.model

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = PRECISIONS[self.settings.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # -- the loop -------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, stop_after_epoch: int | None = None) -> FitResult:
        """Train to the end (from the ``last`` checkpoint on when ``resume``); returns the epoch records.

        ``stop_after_epoch`` ends this call after that epoch without changing the schedule, as a time-boxed job
        would be cut off; ``fit(resume=True)`` later continues exactly where it stopped.
        """
        start_epoch = self._resume() if resume else 0
        result = FitResult(history=self.run_dir.read_jsonl(LOG_FILE) if resume else [])
        writer = self._tensorboard(purge_step=self.step if resume else None)
        try:
            for epoch in range(start_epoch, self.settings.epochs):
                if self.settings.max_steps and self.step >= self.settings.max_steps:
                    break
                if stop_after_epoch is not None and epoch >= stop_after_epoch:
                    result.finished = False
                    break
                record = self._train_epoch(epoch, writer)
                for module in {id(self.model): self.model, id(self.eval_module): self.eval_module}.values():
                    average_buffers(self.dist, module)
                if self.evaluate is not None:
                    self.eval_module.eval()
                    record.update(self.evaluate(self.eval_module))
                record = train_log_record(**record)  # the shared schema: step, epoch, train_loss, lr, val_...
                improved = self._update_best(record)
                record["best"] = dict(self.best) if self.best else None
                self._save_epoch(record, improved, writer)
                if self.on_epoch is not None and self.dist.is_main:
                    self.on_epoch(record)
                result.history.append(record)
                result.epochs_run += 1
        finally:
            if writer is not None:
                writer.close()
        result.step = self.step
        result.best = self.best
        result.best_tag = "best" if self.best is not None else "last"
        return result

    def _train_epoch(self, epoch: int, writer: Any) -> dict[str, Any]:
        self.train_model.train()
        loss_sum, items, start = 0.0, 0, time.perf_counter()
        with self._progress(epoch) as advance:
            for batch in self.train_batches(epoch):
                if self.settings.max_steps and self.step >= self.settings.max_steps:
                    break
                loss, n = self._train_step(batch)
                loss_sum += loss * n
                items += n
                elapsed = time.perf_counter() - start
                advance(loss, items * self.dist.world_size / max(elapsed, 1e-9))
                if writer is not None and self.step % self.settings.log_every_steps == 0:
                    writer.add_scalar("train/loss", loss, self.step)
                    writer.add_scalar("train/lr", self.optimizer.param_groups[0]["lr"], self.step)
        seconds = time.perf_counter() - start
        totals = self.dist.gather((loss_sum, items))
        all_items = sum(n for _, n in totals)
        return {
            "epoch": epoch + 1,
            "step": self.step,
            "train_loss": sum(s for s, _ in totals) / max(all_items, 1),
            "lr": self.optimizer.param_groups[0]["lr"],
            "images": all_items,
            "epoch_seconds": seconds,
            "images_per_s": all_items / max(seconds, 1e-9),
        }

    def _train_step(self, batch: Any) -> tuple[float, int]:
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            loss, n = self.loss_fn(self.train_model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss is {loss.item()} at step {self.step}; lower the learning rate "
                f"or check the data (precision: {self.settings.precision})"
            )
        self.scaler.scale(loss).backward()
        if self.settings.grad_clip_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.step)
        return float(loss.detach()), n

    def _update_best(self, record: dict[str, Any]) -> bool:
        name = self.settings.best_metric
        if name is None or record.get(name) is None or not math.isfinite(record[name]):
            return False
        if self.best is None or record[name] > self.best["value"]:
            self.best = {"metric": name, "value": record[name], "epoch": record["epoch"], "step": record["step"]}
            return True
        return False

    # -- files ----------------------------------------------------------------------------------------------
    def _save_epoch(self, record: dict[str, Any], improved: bool, writer: Any) -> None:
        """Log first, then checkpoints: a log line beyond the last checkpoint is dropped on resume."""
        rng_states = self.dist.gather(capture_rng())
        if self.dist.is_main:
            self.run_dir.append_jsonl(LOG_FILE, [record])
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("epoch", "step"):
                    writer.add_scalar(f"epoch/{key}", value, self.step)
            writer.flush()
            info = {"epoch": record["epoch"], "step": self.step, "metrics": record, "best": self.best}
            if improved:
                self.checkpoints.save("best", self.eval_module, info)
            state = {
                "epoch": record["epoch"],
                "optimizer": self.optimizer.state_dict(),
                "rng": rng_states,
                "best": self.best,
            }
            if self.scheduler is not None:
                state["scheduler"] = self.scheduler.state_dict()
            if self.scaler.is_enabled():
                state["scaler"] = self.scaler.state_dict()
            if self.ema is not None:
                state["model"] = state_tensors(self.model)
            self.checkpoints.save_state(state)
            self.checkpoints.save("last", self.eval_module, info)
        self.dist.barrier()

    def _resume(self) -> int:
        """Restore everything from ``last``; returns the epoch to start at."""
        from safetensors.torch import load_file

        info = self.checkpoints.read_info("last")
        state = self.checkpoints.load_state()
        if state.get("epoch") != info["epoch"]:
            raise ConfigError(
                f"cannot resume {self.run_dir.path}: last.json is from epoch {info['epoch']} but "
                f"{self.checkpoints.dir}/last-state.pt from epoch {state.get('epoch')} (the run was "
                "killed while saving); restart it with --no-resume"
            )
        last_weights = load_file(str(self.checkpoints.weights_path("last")))
        if self.ema is not None:
            self.ema.module.load_state_dict(last_weights)
            self.model.load_state_dict(state["model"])
        else:
            self.model.load_state_dict(last_weights)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        if len(rng) != self.dist.world_size:
            raise ConfigError(
                f"cannot resume {self.run_dir.path}: it was trained with {len(rng)} process(es), "
                f"this run has {self.dist.world_size}"
            )
        restore_rng(rng[self.dist.rank])
        self.step, self.best = int(info["step"]), state.get("best")
        if self.dist.is_main:  # forget epochs logged after the checkpoint (a run killed while saving)
            truncate_jsonl(self.run_dir / LOG_FILE, info["epoch"], key="epoch")
        self.dist.barrier()
        return int(info["epoch"])

    def _tensorboard(self, purge_step: int | None) -> Any:
        if not self.dist.is_main:
            return None
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb"), purge_step=purge_step)

    @contextlib.contextmanager
    def _progress(self, epoch: int):
        """Yields ``advance(loss, images_per_s)``; a rich bar on rank 0 when enabled, else a no-op."""
        if not (self.settings.progress and self.dist.is_main):
            yield lambda loss, ips: None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

        from fgvlm.progress import ReportingProgress

        columns = (
            TextColumn("epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.3f}  {task.fields[ips]:.1f} img/s"),
            TimeRemainingColumn(),
        )
        total = min(self.settings.steps_per_epoch, self.settings.total_steps - self.step)
        with ReportingProgress(*columns) as bar:
            task = bar.add_task("train", total=total, epoch=f"{epoch + 1}/{self.settings.epochs}", loss=0.0, ips=0.0)
            yield lambda loss, ips: bar.update(task, advance=1, loss=loss, ips=ips)
