"""What a run's work cost: the ``cost`` block of ``metrics.json`` (wall time, images, tokens, memory, devices, FLOPs).

Every run directory carries a ``CostMeter`` (``RunDir.cost``), started when the run is opened. The kind adds what
only it knows -- images processed, tokens (``prompt`` and ``generated`` for a VLM answering; the schema keeps
``trained`` for fine-tuning, which today records the training images it saw and its final evaluation's tokens and
FLOPs, not the training steps' own), counted FLOPs with the rule that counted them -- and
``fgvlm.runs.write_results`` writes the block.
Peak memory and devices are read from the process at the end: peak RSS (``resource.getrusage``), and per CUDA device
this process used, ``torch.cuda.max_memory_allocated``. Under several processes the kinds that call ``gather``
(a collective call on every rank before rank 0 writes: evaluation, heads, CNNs; not yet fine-tuning) merge them:
counts are summed, the RSS peak is the largest process's, and the devices and CUDA peaks of every process are
listed. Wall time is this invocation's (a resumed run's earlier invocations are not
known here). The schema is ``COST_KEYS``; readers must tolerate a missing block (runs written before it existed).

Counted FLOPs follow a stated rule: a VLM's forward and training FLOPs by the ``2N`` / ``6N`` rule
(``fgvlm.models.flops``), a CNN's or a head's by ``FlopCounterMode`` on one item (``count_forward_flops``, rule
``ITEM_FLOPS_RULE``).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

COST_KEY = "cost"
COST_KEYS = (
    "wall_seconds",
    "images",
    "images_per_second",
    "tokens",
    "tokens_per_second",
    "peak_memory",
    "device_type",
    "devices",
    "device_count",
    "device_hours",
    "flops",
    "flops_rule",
)
"""The keys of the ``cost`` block, in order (``tokens`` and ``tokens_per_second`` only when tokens were counted)."""
TOKEN_KINDS = ("prompt", "generated", "trained")
ITEM_FLOPS_RULE = (
    "F = FLOPs of one item's forward counted by torch.utils.flop_counter.FlopCounterMode (matmuls and "
    "convolutions); 3·F per training item (forward + backward), F per evaluated item"
)


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports kilobytes, macOS bytes)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def process_resources() -> dict[str, Any]:
    """This process's peak memory and the devices it used: the CUDA devices with memory allocated, else the CPU.

    torch is looked at only when already imported (a data audit never loads it).
    """
    torch = sys.modules.get("torch")
    cuda: list[int] = []
    names: list[str] = []
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        for index in range(torch.cuda.device_count()):
            allocated = int(torch.cuda.max_memory_allocated(index))
            if allocated > 0:
                cuda.append(allocated)
                names.append(torch.cuda.get_device_name(index))
    if names:
        return {"rss_bytes": peak_rss_bytes(), "cuda": cuda, "device_type": "cuda", "devices": names}
    threads = torch.get_num_threads() if torch is not None else len(os.sched_getaffinity(0))
    return {"rss_bytes": peak_rss_bytes(), "cuda": [], "device_type": "cpu", "devices": [f"cpu ({threads} threads)"]}


def count_forward_flops(module: Any, *inputs: Any) -> int:
    """FLOPs of one forward of ``module`` on ``inputs`` (``FlopCounterMode``: matmuls and convolutions).

    Run in eval mode without gradients (batch-norm statistics and dropout untouched), then the mode is restored.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(*inputs)
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


class CostMeter:
    """Counts one run invocation's work; ``block()`` is the ``cost`` block (see the module docstring)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.images = 0
        self.tokens: dict[str, int] = {}
        self.flops: float | None = None
        self.rules: list[str] = []
        self._gathered: tuple[int, list[dict[str, Any]]] | None = None
        self._watched: tuple[Any, Any, tuple[str, ...]] | None = None

    def add_images(self, count: int) -> None:
        """Images processed: evaluated, or seen in training (an image seen in each of 3 epochs counts 3 times)."""
        self.images += int(count)

    def add_tokens(self, **counts: int) -> None:
        """Tokens by kind (``prompt``, ``generated``, ``trained``); a kind given once appears in the block."""
        for kind, count in counts.items():
            if kind not in TOKEN_KINDS:
                raise ValueError(f"unknown token kind {kind!r}; use one of {', '.join(TOKEN_KINDS)}")
            self.tokens[kind] = self.tokens.get(kind, 0) + int(count)

    def add_flops(self, flops: float | None, rule: str) -> None:
        """Counted FLOPs and the rule that counted them (None: not counted, the block keeps ``flops: null``)."""
        if flops is None:
            return
        self.flops = (self.flops or 0.0) + float(flops)
        if rule not in self.rules:
            self.rules.append(rule)

    def add_block(self, block: dict[str, Any] | None) -> None:
        """Add the counts of another run's ``cost`` block (a sub-run, e.g. a fine-tuning run's final evaluation):
        its images, tokens and FLOPs (with its rule). Its time, memory and devices are this run's already."""
        if not block:
            return
        self.add_images(block.get("images") or 0)
        self.add_tokens(**(block.get("tokens") or {}))
        self.add_flops(block.get("flops"), block.get("flops_rule") or "")

    def watch_backend(self, backend: Any, token_kinds: tuple[str, ...]) -> None:
        """Count what a VLM backend runs from now on: its tokens and its forward FLOPs (``fgvlm.models.flops``).

        ``token_kinds``: the counts that apply (``("prompt", "generated")`` when answering, ``("prompt",)`` when
        ranking or embedding). A backend that counts nothing (the dummy one) adds nothing. The backend's work is
        taken into the meter at ``gather`` and ``block``.
        """
        usage = getattr(backend, "usage", None)
        self._watched = (backend, usage.copy(), token_kinds) if usage is not None else None

    def _settle(self) -> None:
        """Add the watched backend's work since the last look."""
        if self._watched is None:
            return
        backend, since, token_kinds = self._watched
        done = backend.usage.since(since)
        self.add_tokens(**{kind: getattr(done, f"{kind}_tokens") for kind in token_kinds})
        self.add_flops(backend.counted_flops(done), backend.flops_rule)
        self._watched = (backend, backend.usage.copy(), token_kinds)

    def _local(self) -> dict[str, Any]:
        """This process's counts and resources now."""
        self._settle()
        counts = {"images": self.images, "tokens": dict(self.tokens), "flops": self.flops, "rules": list(self.rules)}
        return {**counts, **process_resources()}

    def gather(self, group: Any) -> None:
        """Collect every process's counts and resources (a collective call: every rank calls it).

        ``group``: a ``fgvlm.distributed.ProcessGroup`` (None or a world of one: nothing to collect). The rank that
        writes may go on counting afterwards: its own entry is read again in ``block``.
        """
        if group is not None and group.world_size > 1:
            self._gathered = (group.rank, group.gather(self._local()))

    def block(self, wall_seconds: float | None = None) -> dict[str, Any]:
        """The ``cost`` block; ``wall_seconds`` defaults to the time since the meter started."""
        rank, every = self._gathered or (0, [None])
        every = [*every[:rank], self._local(), *every[rank + 1 :]]
        wall = round(wall_seconds if wall_seconds else time.time() - self.started, 3)
        images = sum(p["images"] for p in every)
        tokens: dict[str, int] = {}
        for process in every:
            for kind, count in process["tokens"].items():
                tokens[kind] = tokens.get(kind, 0) + count
        counted = [p["flops"] for p in every if p["flops"] is not None]
        rules = list(dict.fromkeys(rule for p in every for rule in p["rules"]))
        devices = [name for p in every for name in p["devices"]]

        def rate(count: int) -> float | None:
            return round(count / wall, 3) if wall > 0 else None

        block: dict[str, Any] = {"wall_seconds": wall, "images": images, "images_per_second": rate(images)}
        if tokens:
            block["tokens"] = tokens
            block["tokens_per_second"] = {kind: rate(count) for kind, count in tokens.items()}
        block["peak_memory"] = {
            "rss_bytes": max(p["rss_bytes"] for p in every),
            "cuda_max_allocated_bytes": [b for p in every for b in p["cuda"]],
        }
        block["device_type"] = "cuda" if any(p["device_type"] == "cuda" for p in every) else "cpu"
        block["devices"] = devices
        block["device_count"] = len(devices)
        block["device_hours"] = round(wall * len(devices) / 3600, 6)
        block["flops"] = sum(counted) if counted else None
        block["flops_rule"] = "; ".join(rules) if counted else None
        return block
