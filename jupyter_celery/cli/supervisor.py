"""Keeping a worker running: ``jupyter-celery worker`` restarts its Celery worker if it stops.

The Celery worker runs as a child process. Whenever it exits without having been asked to (for
example after the "Unrecoverable error" kombu raises in the worker's main process when the broker
connection drops while a job is unacknowledged -- Celery then exits with code 0 -- or an
out-of-memory kill), it is started again after a backoff (1 s, doubling up to 30 s; reset once it
has run for a minute). SIGTERM and SIGINT are passed on to it, and the supervisor then exits with
its code: stopping a worker stays a clean stop. (A remote ``celery control shutdown`` is not
such a request: the worker comes back. Stop it with a signal, or run with ``--no-restart``.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

MAX_BACKOFF = 30.0
STABLE_AFTER = 60.0


def supervise(argv: Sequence[str], echo: Callable[[str], None] = print) -> int:
    """Run ``argv`` and restart it when it fails; returns its exit code once it stops cleanly."""
    stopping: list[int] = []
    child: subprocess.Popen[bytes] | None = None

    def forward(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    backoff = 1.0
    try:
        while True:
            started = time.monotonic()
            child = subprocess.Popen(list(argv))
            code = child.wait()
            if stopping:
                return code
            if time.monotonic() - started > STABLE_AFTER:
                backoff = 1.0
            echo(f"jupyter-celery worker: the Celery worker exited with code {code}; restarting in {backoff:g}s")
            deadline = time.monotonic() + backoff
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.1)  # backoff before a restart, interruptible by SIGTERM
            if stopping:
                return code
            backoff = min(backoff * 2, MAX_BACKOFF)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def worker_command(queue: str, options: Sequence[str]) -> list[str]:
    """The command of the supervised Celery worker itself."""
    return [sys.executable, "-m", "jupyter_celery", "worker", "-q", queue, "--no-restart", "--", *options]
