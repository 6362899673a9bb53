"""Shared helpers of the fine-tuning tests: an interrupted run (the Trainer killed mid-run, then resumed)."""

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
