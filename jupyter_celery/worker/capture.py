"""Where a job's output and progress go while it runs on a worker.

:func:`job_io` points ``sys.stdout`` / ``sys.stderr`` and the ``progress()`` / ``display()``
runtime (see :mod:`jupyter_celery.core.runtime`) at the job's :class:`EventBatcher`, and makes each
of them a cancellation point: once the job was asked to stop, the next output line or progress
call raises :class:`CancelRequested`.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from jupyter_celery.core import runtime
from jupyter_celery.core.errors import CancelRequested
from jupyter_celery.core.protocol import Event, EventKind
from jupyter_celery.worker.batching import EventBatcher


class JobReporter:
    """The runtime reporter of one job: progress and display events, and the cancellation point."""

    def __init__(self, batcher: EventBatcher, cancel: threading.Event | None) -> None:
        self.batcher = batcher
        self.cancel = cancel

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelRequested("the job was cancelled")

    def progress(self, done: float, total: float | None, message: str) -> None:
        self.check_cancel()
        fields = {"done": f"{done:g}", "total": None if total is None else f"{total:g}", "message": message}
        self.batcher.add_progress(Event(EventKind.PROGRESS, fields))

    def display(self, data: dict[str, str]) -> None:
        self.check_cancel()
        self.batcher.add(Event(EventKind.DISPLAY, {"data": data}))


class _Relay(io.TextIOBase):
    def __init__(self, reporter: JobReporter, kind: EventKind) -> None:
        self._reporter = reporter
        self._kind = kind

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        self._reporter.check_cancel()
        self._reporter.batcher.add_text(self._kind, text)
        return len(text)


@contextmanager
def job_io(batcher: EventBatcher, cancel: threading.Event | None = None) -> Iterator[JobReporter]:
    """Send the job's stdout, stderr, progress and displays to its stream while the block runs.

    With ``cancel``, each of them raises :class:`CancelRequested` once it is set.
    """
    reporter = JobReporter(batcher, cancel)
    saved = sys.stdout, sys.stderr
    sys.stdout = _Relay(reporter, EventKind.STDOUT)
    sys.stderr = _Relay(reporter, EventKind.STDERR)
    runtime.install(reporter)
    try:
        yield reporter
    finally:
        runtime.install(None)
        sys.stdout, sys.stderr = saved
