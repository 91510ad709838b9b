"""Following a job in the cell's own thread, while the cell waits for it.

What the job prints becomes the cell's output, as it is produced (as for a normal cell); where
there are no widgets (a terminal IPython), state changes and progress are printed as compact
text lines too.
"""

from __future__ import annotations

import queue
import sys
import time

from jupyter_celery.core.protocol import Event, EventKind
from jupyter_celery.kernel.job import Job
from jupyter_celery.kernel.views import status_line

TEXT_PROGRESS_EVERY = 1.0  # seconds between two progress lines in text mode
TEXT_DELAY = 1.0  # a job that ends sooner prints no status line at all (like tqdm's delay)


class _Printer:
    def __init__(self, job: Job, text_progress: bool) -> None:
        self.job = job
        self.text_progress = text_progress
        self.last_line = 0.0
        self.last_state = ""
        self.start = time.monotonic()

    def handle(self, event: Event) -> None:
        if event.kind is EventKind.STDOUT:
            sys.stdout.write(event.fields.get("text", ""))
        elif event.kind is EventKind.STDERR:
            sys.stderr.write(event.fields.get("text", ""))
        elif event.kind is EventKind.DISPLAY:
            from IPython.display import display

            display(event.fields.get("data") or {}, raw=True)
        if self.text_progress:
            self._status(force=event.kind.terminal or self.job.state != self.last_state)

    def tick(self) -> None:
        if self.text_progress:
            self._status(force=False)

    def _status(self, force: bool) -> None:
        now = time.monotonic()
        if now - self.start < TEXT_DELAY:
            return
        if force or (self.job.progress is not None and now - self.last_line >= TEXT_PROGRESS_EVERY):
            sys.stdout.flush()
            print(status_line(self.job), file=sys.stderr, flush=True)
            self.last_line = now
            self.last_state = self.job.state


def follow_in_cell(job: Job, *, text_progress: bool) -> None:
    """Block until ``job`` ends, echoing its output; Ctrl-C (kernel interrupt) cancels it."""
    printer = _Printer(job, text_progress)
    snapshot, events = job.listen()
    try:
        for event in snapshot:
            printer.handle(event)
        while not (job.done() and events.empty()):
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                printer.tick()
                continue
            printer.handle(event)
    except KeyboardInterrupt:
        job.cancel()
        raise
