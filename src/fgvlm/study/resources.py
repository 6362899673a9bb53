"""What each concurrent run of a study gets: its share of the CPU cores and, with ``--gpus-per-run``, its own GPUs.

Threads: ``cores // concurrent runs // processes of the run`` (at least 1), set through ``OMP_NUM_THREADS`` (which
torch reads for its intra-op threads) and the BLAS libraries' own variables, so two runs on 2 cores do not each
start 2 threads. GPUs: a disjoint set of the visible devices per run (``CUDA_VISIBLE_DEVICES``), as many as
``--gpus-per-run`` or as the run's ``launch.nproc`` processes, whichever is more; a run waits until that many are
free. Without ``--gpus-per-run`` every run sees every device, as a single run does.
"""

from __future__ import annotations

import dataclasses
import os

from fgvlm.config import ConfigError
from fgvlm.study.spec import RunSpec

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may use (its CPU affinity: a SLURM job's allocation, a taskset)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def visible_devices() -> list[str]:
    """CUDA devices to hand out: ``CUDA_VISIBLE_DEVICES``'s entries when set, else every device torch sees."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [device.strip() for device in listed.split(",") if device.strip() and device.strip() != "-1"]
    import torch

    return [str(index) for index in range(torch.cuda.device_count())]


@dataclasses.dataclass
class Allocation:
    """One run's share: threads per process and, when devices are handed out, its devices."""

    threads: int
    devices: list[str] | None = None
    cores: int = 1
    concurrent: int = 1

    def env(self) -> dict[str, str]:
        env = {name: str(self.threads) for name in THREAD_VARIABLES}
        if self.devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.devices)
        return env

    def describe(self) -> str:
        """The line the run's log states, e.g. '1 thread per process (2 cores / 2 concurrent runs)'."""
        text = f"{self.threads} thread{'s' if self.threads != 1 else ''} per process ({self.cores} cores / "
        text += f"{self.concurrent} concurrent run{'s' if self.concurrent != 1 else ''}; {', '.join(THREAD_VARIABLES)})"
        if self.devices is not None:
            text += f"; CUDA_VISIBLE_DEVICES={','.join(self.devices)}"
        return text


class Resources:
    """Hands out cores and devices to runs as they start and takes them back as they end (one thread at a time)."""

    def __init__(self, cores: int, concurrent: int, devices: list[str] | None = None, gpus_per_run: int = 0):
        self.cores = max(1, cores)
        self.concurrent = max(1, concurrent)
        self.devices = devices if gpus_per_run > 0 else None
        self.gpus_per_run = gpus_per_run
        self.free: list[str] = list(self.devices or [])

    def devices_needed(self, spec: RunSpec) -> int:
        return max(self.gpus_per_run, spec.launch.nproc) if self.devices is not None else 0

    def check(self, specs: list[RunSpec]) -> None:
        """Refuse, before anything runs, a run that needs more devices than there are."""
        if self.devices is None:
            return
        if not self.devices:
            raise ConfigError("--gpus-per-run: no CUDA device is visible (CUDA_VISIBLE_DEVICES, torch)")
        for spec in specs:
            if self.devices_needed(spec) > len(self.devices):
                raise ConfigError(
                    f"run {spec.id!r} needs {self.devices_needed(spec)} GPUs (launch.nproc {spec.launch.nproc}, "
                    f"--gpus-per-run {self.gpus_per_run}) but only {len(self.devices)} are visible: "
                    f"{','.join(self.devices)}"
                )

    def take(self, spec: RunSpec) -> Allocation | None:
        """The run's share, or None while too few devices are free."""
        threads = max(1, self.cores // self.concurrent // spec.launch.nproc)
        if self.devices is None:
            return Allocation(threads, None, self.cores, self.concurrent)
        needed = self.devices_needed(spec)
        if needed > len(self.free):
            return None
        taken, self.free = self.free[:needed], self.free[needed:]
        return Allocation(threads, taken, self.cores, self.concurrent)

    def give_back(self, allocation: Allocation) -> None:
        if self.devices is not None and allocation.devices:
            self.free = [device for device in self.devices if device in {*self.free, *allocation.devices}]
