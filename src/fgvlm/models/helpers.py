"""Small model-side helpers the backends share: a bounded LRU dict, PEFT unwrapping, a forward-signature check.

No torch import: they work on whatever model object they are given.
"""

from __future__ import annotations

import functools
import inspect
from collections import OrderedDict
from typing import Any

RENDER_CACHE_SIZE = 256
"""(prompt, candidates) entries kept by the rendering and prior caches: per-image prompts (shuffled options)
would otherwise grow them by one entry per image."""


class BoundedCache(OrderedDict):
    """A dict that forgets its least recently stored or read (via ``recall``) entry beyond ``maxsize`` entries."""

    def __init__(self, maxsize: int = RENDER_CACHE_SIZE):
        super().__init__()
        self.maxsize = maxsize

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        self.move_to_end(key)
        while len(self) > self.maxsize:
            self.popitem(last=False)

    def recall(self, key: Any) -> Any:
        """The value for ``key`` (marked as just used), or None."""
        if key not in self:
            return None
        self.move_to_end(key)
        return super().__getitem__(key)


def unwrap_model(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (``get_base_model()``), or ``model`` itself.

    Under ``peft.get_peft_model`` attribute paths shift (``peft_model.model`` is the LoRA tuner's model, not the
    inner ``...Model``); code that reaches inner modules goes through this. LoRA layers are injected in place,
    so the unwrapped model still runs with its adapters.
    """
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


@functools.cache
def forward_takes_logits_to_keep(module_type: type) -> bool:
    """Whether ``module_type.forward`` names ``logits_to_keep`` (decoder-only LMs and VLMs do; InstructBLIP's
    wrapper and T5 do not), checked once per class."""
    return "logits_to_keep" in inspect.signature(module_type.forward).parameters
