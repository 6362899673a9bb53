"""fgvlm: fine-grained visual recognition with large multimodal models.

The package imports nothing heavy: ``fgvlm.match_answer`` (free-text answer -> class id, see
``fgvlm.eval.matching``) is loaded on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["match_answer"]

_LAZY = {"match_answer": "fgvlm.eval.matching:match_answer"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, _, attr = _LAZY[name].partition(":")
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'fgvlm' has no attribute {name!r}")
