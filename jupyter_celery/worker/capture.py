"""A job's events on their way to its stream: written in order, from a background thread, batched.

Output (stdout, stderr) and progress are merged into at most ``1 / interval`` writes a second,
so a job printing in a tight loop costs Redis a few transactions, not one per line; the
``started`` event goes through the same queue, so the job begins without waiting on Redis.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from jupyter_celery.core.errors import ConnectionFailed
from jupyter_celery.core.events import EventLog
from jupyter_celery.core.protocol import Event, EventKind

MAX_PENDING = 1 << 20  # characters of output kept while Redis is unreachable; older text is dropped
TEXT_KINDS = (EventKind.STDOUT, EventKind.STDERR)
LAZY_DELAY = 0.05  # a lazy event (``started``) waits this long for company before it is written alone


class _Flusher:
    """One background thread per process that writes the batchers' events when they are due."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[EventBatcher, float] = {}
        self._pid = os.getpid()
        threading.Thread(target=self._run, name="jc-events", daemon=True).start()

    def schedule(self, batcher: EventBatcher, due: float) -> None:
        with self._cond:
            if due < self._due.get(batcher, float("inf")):
                earliest = min(self._due.values(), default=float("inf"))
                self._due[batcher] = due
                if due < earliest:  # otherwise the thread wakes up early enough already
                    self._cond.notify()

    def cancel(self, batcher: EventBatcher) -> None:
        with self._cond:
            self._due.pop(batcher, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                ready = [b for b, due in self._due.items() if due <= now]
                if not ready:
                    upcoming = min(self._due.values(), default=None)
                    self._cond.wait(None if upcoming is None else upcoming - now)
                    continue
                for batcher in ready:
                    del self._due[batcher]
            for batcher in ready:
                batcher.flush()


_flusher: _Flusher | None = None
_flusher_lock = threading.Lock()


def _get_flusher() -> _Flusher:
    global _flusher  # noqa: PLW0603 - one flusher thread per process
    with _flusher_lock:
        if _flusher is None or _flusher._pid != os.getpid():  # a forked child starts its own
            _flusher = _Flusher()
        return _flusher


class EventBatcher:
    """Queues a job's events and appends them to its stream in order, batched.

    The first event after a quiet period is written at once (low latency); later ones are
    merged into at most one write per ``interval``. A *lazy* event (``started``) waits up to
    ``LAZY_DELAY`` so that a short job writes its start and its end in one transaction.
    """

    def __init__(self, events: EventLog, job_id: str, interval: float = 0.1) -> None:
        self.events = events
        self.job_id = job_id
        self.interval = interval
        self._pending: list[Event] = []
        self._size = 0
        self._dropped = 0
        self._last_write = -interval
        self._lock = threading.Lock()  # guards the pending list
        self._write_lock = threading.Lock()  # one write at a time, so batches land in order
        self._flusher = _get_flusher()

    def add(self, event: Event, *, lazy: bool = False) -> None:
        with self._lock:
            self._pending.append(event)
        self._schedule(lazy)

    def add_text(self, kind: EventKind, text: str) -> None:
        if not text:
            return
        with self._lock:
            last = self._pending[-1] if self._pending else None
            if last is not None and last.kind is kind:
                self._pending[-1] = Event(kind, {"text": last.fields["text"] + text}, ts=last.ts)
            else:
                self._pending.append(Event(kind, {"text": text}))
            self._size += len(text)
            while self._size > MAX_PENDING and len(self._pending) > 1:
                self._drop_oldest_text()
        self._schedule(lazy=False)

    def _schedule(self, lazy: bool) -> None:
        now = time.monotonic()
        due = max(now + (LAZY_DELAY if lazy else 0.0), self._last_write + self.interval)
        self._flusher.schedule(self, due)

    def _drop_oldest_text(self) -> None:
        for i, event in enumerate(self._pending):
            if event.kind in TEXT_KINDS:
                dropped = len(event.fields["text"])
                del self._pending[i]
                self._size -= dropped
                self._dropped += dropped
                return
        self._size = 0

    def flush(self, *final: Event, objects: Sequence[str] = ()) -> None:
        """Write what is pending (and ``final`` after it, and the job's store ``objects``) in one transaction.

        On a Redis failure the pending events are kept for the next attempt and, when ``final``
        events were given, the error is raised.
        """
        with self._write_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                dropped, self._dropped = self._dropped, 0
                self._size = 0
            if dropped:
                note = Event(EventKind.STDERR, {"text": f"[jupyter-celery: {dropped} characters dropped]\n"})
                pending.insert(0, note)
            if not pending and not final:
                return
            try:
                self.events.append(self.job_id, *pending, *final, objects=objects)
            except ConnectionFailed:
                with self._lock:
                    self._pending = pending + self._pending
                    self._size += sum(len(e.fields.get("text", "")) for e in pending)
                if final:
                    raise
            finally:
                self._last_write = time.monotonic()

    def close(self, *final: Event, objects: Sequence[str] = ()) -> None:
        """Write everything that is left, then ``final`` (the terminal event) and ``objects``, in one transaction."""
        self._flusher.cancel(self)
        self.flush(*final, objects=objects)


class _Relay(io.TextIOBase):
    def __init__(self, batcher: EventBatcher, kind: EventKind) -> None:
        self._batcher = batcher
        self._kind = kind

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._batcher.add_text(self._kind, text)
        return len(text)


@contextmanager
def relay_output(batcher: EventBatcher) -> Iterator[None]:
    """Send ``sys.stdout`` and ``sys.stderr`` to the job's stream while the block runs."""
    saved = sys.stdout, sys.stderr
    sys.stdout = _Relay(batcher, EventKind.STDOUT)
    sys.stderr = _Relay(batcher, EventKind.STDERR)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved
