"""Head training: AdamW + cosine schedule over seeded batches, best step chosen on the validation split.

The schedule is ``fgvlm.train.optim.warmup_cosine`` (decaying to 0), the one the CNN baseline uses too. The step
loop is this module's own, not ``fgvlm.train.loop.TrainLoop``: heads evaluate every N steps, and the cached and
online modes must match step for step.

Features come from a ``FeatureSource``: cached tensors (``TensorFeatures``) or the frozen VLM run on every batch
(``OnlineFeatures``, the reference study's way). Everything random -- head init, batch order, dropout masks -- is
drawn from the seed alone, never from the global RNG the backbone might touch, so with the same seed both sources
give the same head up to float tolerance in the features.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fgvlm.config import ConfigError
from fgvlm.heads.config import HeadRecipe
from fgvlm.heads.model import ClassificationHead, build_head
from fgvlm.runs import train_log_record
from fgvlm.train.optim import warmup_cosine
from fgvlm.train.runtime import torch_threads

if TYPE_CHECKING:
    from fgvlm.data import Split
    from fgvlm.heads.features import FeatureSpec
    from fgvlm.models.base import VLMBackend


class TensorFeatures:
    """Cached features: a batch is an index into one ``[N, D]`` tensor."""

    def __init__(self, features: torch.Tensor):
        self.features = features

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        return self.features.shape[1]

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        return self.features[torch.as_tensor(list(indices), dtype=torch.long)]


class OnlineFeatures:
    """The frozen VLM in the loop: every batch decodes its images and runs ``backend.embed`` on them."""

    def __init__(self, backend: VLMBackend, split: Split, spec: FeatureSpec, batch_size: int = 16):
        self.backend, self.split, self.spec, self.batch_size = backend, split, spec, batch_size
        self._dim: int | None = None

    def __len__(self) -> int:
        return len(self.split)

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = self.get([0]).shape[1]
        return self._dim

    def get(self, indices: Sequence[int]) -> torch.Tensor:
        out = []
        indices = list(indices)
        for begin in range(0, len(indices), self.batch_size):
            images = [self.split[i].image for i in indices[begin : begin + self.batch_size]]
            spec = self.spec
            out.append(self.backend.embed(images, spec.prompt, pooling=spec.pooling, layer=spec.layer).float().cpu())
        return torch.cat(out)


@dataclass
class TrainResult:
    head: ClassificationHead
    best_step: int
    best_val: dict[str, float] | None
    log: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def batch_order(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless batches walking through successive seeded permutations of ``range(n)`` (no sample dropped)."""
    generator = torch.Generator().manual_seed(seed)
    pending: list[int] = []
    while True:
        while len(pending) < batch_size:
            pending.extend(torch.randperm(n, generator=generator).tolist())
        yield pending[:batch_size]
        pending = pending[batch_size:]


@torch.no_grad()
def head_logits(head: ClassificationHead, source: Any, batch_size: int = 1024) -> torch.Tensor:
    """Logits for every item of a feature source, in order (eval mode, no dropout)."""
    was_training = head.training
    head.eval()
    chunks = [head(source.get(range(b, min(len(source), b + batch_size)))) for b in range(0, len(source), batch_size)]
    head.train(was_training)
    return torch.cat(chunks)


def score(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy, top-5 accuracy and cross-entropy of logits against labels."""
    k = min(5, logits.shape[1])
    top5 = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return {
        "accuracy": float((logits.argmax(dim=1) == labels).float().mean()),
        "top5": float(top5.float().mean()),
        "loss": float(nn.functional.cross_entropy(logits, labels)),
    }


def _better(new: dict[str, float], best: dict[str, float] | None) -> bool:
    """Higher accuracy wins; on a tie, a clearly lower loss (rounded so float noise cannot flip the choice)."""
    if best is None or new["accuracy"] > best["accuracy"]:
        return True
    return new["accuracy"] == best["accuracy"] and round(new["loss"], 5) < round(best["loss"], 5)


def train_head(
    train: TensorFeatures | OnlineFeatures,
    train_labels: torch.Tensor,
    num_classes: int,
    recipe: HeadRecipe,
    val: tuple[Any, torch.Tensor] | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train a head for ``recipe.steps`` steps; with ``val`` keep the best evaluated step's weights.

    On cached features one intra-op thread is used: a small head's steps take ~1 ms that way, while several
    threads on a busy CPU spin-wait into tens of ms per step.
    """
    with torch_threads(1 if isinstance(train, TensorFeatures) else None):
        return _train_loop(train, train_labels, num_classes, recipe, val, on_log, progress)


def _train_loop(train, train_labels, num_classes, recipe, val, on_log, progress) -> TrainResult:
    start = time.perf_counter()
    head = build_head(train.dim, num_classes, recipe.head, recipe.hidden_dim, recipe.dropout, recipe.seed)
    if recipe.standardize:
        if not isinstance(train, TensorFeatures):
            raise ConfigError("standardize: needs cached train features (the online mode has none up front)")
        head.set_standardization(train.features)
    optimizer = torch.optim.AdamW(head.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(recipe.steps, recipe.warmup_steps))
    batches = batch_order(len(train), recipe.batch_size, recipe.seed)
    log: list[dict[str, Any]] = []
    best_val, best_step, best_state = None, recipe.steps, None
    head.train()
    bar, task = _step_progress(recipe.steps, progress)
    with bar:
        for step in range(1, recipe.steps + 1):
            indices = next(batches)
            features, labels = train.get(indices), train_labels[indices]
            with torch.random.fork_rng(devices=[]):  # dropout masks from (seed, step) only
                torch.default_generator.manual_seed(recipe.seed * 1_000_003 + step)
                loss = nn.functional.cross_entropy(head(features), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            schedule.step()
            bar.update(task, advance=1, loss=f"{loss.item():.4f}")
            last = step == recipe.steps
            values: dict[str, Any] = {}
            if step % recipe.log_every == 0 or last:
                values.update(train_loss=round(loss.item(), 6), lr=lr)
            if val is not None and (step % recipe.eval_every == 0 or last):
                result = score(head_logits(head, val[0]), val[1])
                values.update(val_accuracy=result["accuracy"], val_top5=result["top5"])
                values.update(val_loss=round(result["loss"], 6))
                if _better(result, best_val):
                    best_val, best_step = result, step
                    best_state = {k: v.clone() for k, v in head.state_dict().items()}
            if values:
                epoch = round(step * recipe.batch_size / len(train), 4)
                log.append(train_log_record(step, epoch=epoch, **values))
                if on_log:
                    on_log(log[-1])
    if best_state is not None:
        head.load_state_dict(best_state)
    return TrainResult(head.eval(), best_step, best_val, log, time.perf_counter() - start)


def _step_progress(total: int, enabled: bool):
    """A rich bar over head steps showing the running loss (silent when disabled)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from fgvlm.progress import ReportingProgress

    columns = (TextColumn("head"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"))
    bar = ReportingProgress(*columns, TimeElapsedColumn(), disable=not enabled)
    return bar, bar.add_task("head", total=total, loss="-")
