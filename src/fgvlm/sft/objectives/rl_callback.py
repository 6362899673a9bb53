"""``RLCallback``: what ``objective: rl`` needs from the Trainer's loop: the step number before each step (it seeds
the sampling), its step numbers in each log, and ``rollouts.jsonl`` cut back to the checkpoint a run resumes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback


class RLCallback(TrainerCallback):
    def __init__(self, model: Any, rollouts: Path):
        self.model = model
        self.rollouts = rollouts

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """A resumed run logs the steps after its checkpoint again: drop their old rollout lines."""
        if state.is_world_process_zero:
            from fgvlm.runfiles import truncate_jsonl

            truncate_jsonl(self.rollouts, state.global_step)  # atomic, as train_log.jsonl (a missing file stays so)
        return control

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.model.step = state.global_step
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> Any:
        if logs is not None and "loss" in logs:
            logs.update(self.model.drain_metrics())
        return control
