"""One writer per run directory: an exclusive ``flock`` on ``OUT/.locks/<id>.lock``.

The lock file lies outside the run directory so that moving a run aside (``--rerun``) keeps it in place. Its text
names the holder (pid, host, start time, command), so a second runner, or a second cluster job, can say who holds
it. The kernel drops the lock when the holder's last descriptor closes, so a killed runner never leaves a stale lock;
the descriptor is passed on to the run's process so the lock lasts exactly as long as anything writes the run.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from fgvlm.config import ConfigError


class RunLockedError(ConfigError):
    """Another process holds the run's lock."""


class RunLock:
    def __init__(self, path: Path, *, wait: bool = False, echo=print, cancelled=lambda: False):
        self.path = path
        self.wait = wait
        self.echo = echo
        self.cancelled = cancelled  # polled while waiting: True ends the wait with RunLockedError
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self.holder()
            if not self.wait:
                os.close(fd)
                raise RunLockedError(
                    f"{self.path.stem!r} is being written by {holder} (lock {self.path}); "
                    "wait for it, or pass --wait to queue behind it"
                ) from None
            self.echo(f"waiting for {self.path.stem!r}: held by {holder}")
            self._wait_for(fd)
        self.fd = fd
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({**holder, "argv": sys.argv}).encode(), 0)
        return self

    def _wait_for(self, fd: int) -> None:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if self.cancelled():
                    os.close(fd)
                    raise RunLockedError(f"stopped waiting for {self.path.stem!r} ({self.path})") from None
                time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def holder(self) -> str:
        """'pid 123 on host (since ...)' from the lock file, as well as it can be read."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another process"
        if not info:
            return "another process"
        return f"pid {info.get('pid')} on {info.get('host')} (since {info.get('since')})"
