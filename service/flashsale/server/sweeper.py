"""The pod's sweeper: a `flashsale sweep --every FLASHSALE_SWEEP_INTERVAL` child of the gunicorn
master, restarted if it dies, stopped with the master.

It runs beside the workers, not inside them, so it costs them no throughput; it keeps the
checkout attempts landing in PostgreSQL within about a second and restores a sale Redis lost.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable

RESTART_DELAY = 1.0
STOP_TIMEOUT = 10.0


class Sweeper:
    def __init__(self, interval: float):
        self._argv = [sys.executable, "-m", "flashsale", "sweep", "--every", str(interval)]
        self._warn: Callable[[str], None] = print
        self._pid = 0
        self._stopping = False

    def start(self, warn: Callable[[str], None]) -> None:
        """Spawn the child and watch it from a thread; `warn` logs a restart."""
        self._warn = warn
        threading.Thread(target=self._keep_running, name="sweeper-watch", daemon=True).start()

    def _keep_running(self) -> None:
        while not self._stopping:
            # posix_spawn, not fork: this thread runs in a master that forks workers, and a
            # forked child of a threaded process can hang before it execs (it did, here).
            self._pid = os.posix_spawn(
                sys.executable, self._argv, os.environ, file_actions=_close_inherited()
            )
            while _running(self._pid):
                time.sleep(0.5)
            if not self._stopping:
                self._warn(f"sweeper {self._pid} exited; starting another")
                time.sleep(RESTART_DELAY)

    def stop(self) -> None:
        """SIGTERM (the sweep in progress finishes), SIGKILL after STOP_TIMEOUT."""
        self._stopping = True
        pid = self._pid
        if not pid or not _running(pid):
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _running(pid):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                break
            time.sleep(0.1)


def _close_inherited() -> list[tuple[int, int]]:
    """The child must not hold the master's listening socket (a stopping master closes it, and
    new connections must then be refused): close every descriptor but stdio in the child."""
    descriptors = (int(name) for name in os.listdir("/proc/self/fd"))
    return [(os.POSIX_SPAWN_CLOSE, fd) for fd in descriptors if fd > 2]


def _running(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return False  # the master's SIGCHLD handling reaped it first
    return done == 0
