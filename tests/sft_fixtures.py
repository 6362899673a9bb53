"""Shared helpers of the fine-tuning tests: an interrupted run (the Trainer killed mid-run, then resumed) and the
steps a run executes (a resumed run must start after its checkpoint, not train again from step 1)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def run_killed_at_step(monkeypatch: pytest.MonkeyPatch, step: int, run: Callable[[], Any]) -> None:
    """Call ``run`` (a ``run_sft``) with the Trainer killed at optimizer step ``step`` (after the checkpoints before
    it), then restore the monitor so a rerun resumes normally."""
    from fgvlm.sft.trainer import SFTMonitor

    original = SFTMonitor.on_step_end

    def crash(self, args, state, control, **kwargs):
        if state.global_step == step:
            raise RuntimeError("simulated kill")
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(SFTMonitor, "on_step_end", crash)
    with pytest.raises(RuntimeError, match="simulated kill"):
        run()
    monkeypatch.setattr(SFTMonitor, "on_step_end", original)


def steps_run(monkeypatch: pytest.MonkeyPatch, run: Callable[[], Any]) -> list[int]:
    """Call ``run`` (a ``run_sft``) and return the optimizer steps it executed. Seeded training is deterministic,
    so a rerun that ignored its checkpoint would end with the same weights: what a resume test must also see is
    that only the steps after the checkpoint ran."""
    from fgvlm.sft.trainer import SFTMonitor

    original, steps = SFTMonitor.on_step_end, []

    def record(self, args, state, control, **kwargs):
        steps.append(state.global_step)
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(SFTMonitor, "on_step_end", record)
    try:
        run()
    finally:
        monkeypatch.setattr(SFTMonitor, "on_step_end", original)
    return steps
