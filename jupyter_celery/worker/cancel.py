"""Cancelling the job that runs in this worker process.

The kernel asks for a cancel by setting the job's cancel key (and revoking it, which drops a job
that is still queued). While a job runs, one thread per process polls that key; once it is set,
the job's next ``progress()`` call or output line raises ``CancelRequested`` (a cooperative stop),
and if the job has not stopped after the grace period the watcher has Celery terminate the
process (``revoke(terminate=True)``), which the worker reports as ``cancelled``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from jupyter_celery.core.errors import ConnectionFailed
from jupyter_celery.core.events import REDIS_ERRORS, EventLog

POLL_INTERVAL = 1.0


class CancelWatch:
    """Watches the cancel key of the one job running in this process."""

    def __init__(self, events: EventLog, terminate: Callable[[str], None], grace: float) -> None:
        self.events = events
        self.terminate = terminate
        self.grace = grace
        self.requested = threading.Event()
        self._job: str | None = None
        self._since = 0.0
        self._terminated = False
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self.pid = os.getpid()
        threading.Thread(target=self._run, name="jc-cancel", daemon=True).start()

    def watch(self, job_id: str) -> threading.Event:
        """Start watching ``job_id``; returns the event set once a cancel was requested."""
        with self._lock:
            self._job = job_id
            self.requested = threading.Event()
            self._since = 0.0
            self._terminated = False
        return self.requested

    def unwatch(self) -> None:
        with self._lock:
            self._job = None

    def _run(self) -> None:
        while True:
            self._wake.wait(POLL_INTERVAL)
            self._wake.clear()
            with self._lock:
                job, requested = self._job, self.requested
            if job is None:
                continue
            if not requested.is_set():
                try:
                    asked = self.events.cancel_requested(job)
                except (*REDIS_ERRORS, ConnectionFailed):
                    continue  # Redis is away; look again at the next tick
                if asked:
                    with self._lock:
                        if self._job == job:
                            self._since = time.monotonic()
                            requested.set()
            elif not self._terminated and time.monotonic() - self._since > self.grace:
                with self._lock:
                    still_running = self._job == job
                    self._terminated = still_running
                if still_running:
                    self.terminate(job)


_watch: CancelWatch | None = None


def cancel_watch(events: EventLog, terminate: Callable[[str], None], grace: float) -> CancelWatch:
    """This process's watcher (a forked child starts its own)."""
    global _watch  # noqa: PLW0603 - one watcher per process
    if _watch is None or _watch.pid != os.getpid():
        _watch = CancelWatch(events, terminate, grace)
    return _watch
