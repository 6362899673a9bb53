"""Start one run as its own process, stream its output, keep it in ``RUN/log.txt``, pass signals on.

Each child starts in its own session (process group), so a terminal's Ctrl-C reaches the runner only; the runner
forwards SIGINT/SIGTERM to every running child's whole group (torchrun and its workers included), waits for them,
and then stops. If the runner dies without a chance to forward (SIGKILL), the kernel sends each child SIGTERM
(``PR_SET_PDEATHSIG`` on Linux: when the runner's thread that started it ends), so no orphan keeps writing a run.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fgvlm.kinds import kind_argv
from fgvlm.study.spec import RunSpec

FORWARDED = (signal.SIGINT, signal.SIGTERM)
PR_SET_PDEATHSIG = 1


def launch_argv(spec: RunSpec, config_path: Path, out: Path) -> list[str]:
    """The run's command line: ``python -m fgvlm <kind words> --config C --out O``, under its launcher if any."""
    module_argv = kind_argv(spec.kind, config_path, out)  # ["-m", "fgvlm", ...]
    launch = spec.launch
    if launch.launcher == "accelerate":
        accelerate = ["-m", "accelerate.commands.launch", "--num_processes", str(launch.nproc), *launch.args]
        return [sys.executable, *accelerate, *module_argv]
    if launch.launcher == "torchrun" or launch.nproc > 1:
        torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(launch.nproc)]
        return [sys.executable, *torchrun, *launch.args, *module_argv]
    return [sys.executable, *module_argv]


@functools.cache
def _libc() -> Any:
    """The C library, loaded in the runner: a child forked from a thread must not load libraries before exec."""
    return ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _child_setup() -> None:
    """In the child before exec: SIGTERM when the runner dies; SIGINT back to its default (the runner may ignore it)."""
    libc = _libc()
    if libc is not None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Interrupted(Exception):
    """The runner received SIGINT/SIGTERM; every child got it too and has exited."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalForwarder:
    """While active (in the main thread), SIGINT/SIGTERM go on to the process group of every registered child.

    A child registered after a signal arrived gets that signal at once, so a run starting just then stops too.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.children: set[int] = set()
        self.lock = threading.Lock()
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> SignalForwarder:
        self.previous = {signum: signal.signal(signum, self._forward) for signum in FORWARDED}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _forward(self, signum: int, frame: object) -> None:
        self.received.append(signum)
        for pid in list(self.children):
            _kill_group(pid, signum)

    def register(self, pid: int) -> None:
        with self.lock:
            self.children.add(pid)
        if self.received:
            _kill_group(pid, self.received[0])

    def unregister(self, pid: int) -> None:
        with self.lock:
            self.children.discard(pid)


def _kill_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


def run_process(
    argv: list[str],
    log_path: Path,
    *,
    on_line: Callable[[str], None],
    signals: SignalForwarder,
    env: dict[str, str] | None = None,
    header: str = "",
    keep_fds: tuple[int, ...] = (),
) -> int:
    """Run ``argv`` (in its own session, with ``env`` added) to its end; returns its exit code.

    Every output line goes to ``log_path`` (appended, after the command line and ``header``) and to ``on_line``;
    ``signals`` forwards the runner's SIGINT/SIGTERM to it.
    """
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    _libc()  # loaded here, not in the forked child
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(argv)}   # {time.strftime('%Y-%m-%d %H:%M:%S')}\n{header}".encode())
        log.flush()
        child = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=child_env,
            start_new_session=True,
            preexec_fn=_child_setup,
            pass_fds=keep_fds,
        )
        signals.register(child.pid)
        try:
            assert child.stdout is not None
            for raw in iter(child.stdout.readline, b""):
                log.write(raw)
                log.flush()
                on_line(raw.decode(errors="replace").rstrip("\r\n").split("\r")[-1])
            return child.wait()
        finally:
            signals.unregister(child.pid)
