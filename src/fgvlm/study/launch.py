"""Start one run as its own process, stream its output, keep it in ``RUN/log.txt``, pass signals on.

The child starts in its own session (process group), so a terminal's Ctrl-C reaches the runner only; the runner
forwards SIGINT/SIGTERM to the child's whole group (torchrun and its workers included), waits for it, and then stops.
If the runner dies without a chance to forward (SIGKILL), the kernel sends the child SIGTERM (``PR_SET_PDEATHSIG``
on Linux), so no orphan keeps writing the run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

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


def _child_setup() -> None:
    """In the child before exec: SIGTERM when the runner dies; SIGINT back to its default (the runner may ignore it)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Interrupted(Exception):
    """The runner received SIGINT/SIGTERM; the child got it too and has exited."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_process(
    argv: list[str], log_path: Path, *, prefix: str, echo: Callable[[str], None], keep_fds: tuple[int, ...] = ()
) -> int:
    """Run ``argv``; every output line goes to ``echo`` (with ``prefix``) and to ``log_path`` (appended)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    received: list[int] = []
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(argv)}   # {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        child = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            preexec_fn=_child_setup,
            pass_fds=keep_fds,
        )

        def forward(signum: int, frame: object) -> None:
            received.append(signum)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signum)

        previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
        try:
            assert child.stdout is not None
            for raw in iter(child.stdout.readline, b""):
                log.write(raw)
                log.flush()
                echo(prefix + raw.decode(errors="replace").rstrip("\r\n").split("\r")[-1])
            returncode = child.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    if received:
        raise Interrupted(received[0])
    return returncode
