"""A job's events on their way to its stream: written in order, from a background thread, batched.

Output (stdout, stderr) and progress are merged into at most ``1 / interval`` writes a second,
so a job printing in a tight loop costs Redis a few transactions, not one per line; the
``started`` event goes through the same queue, so the job begins without waiting on Redis.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from jupyter_celery.core.errors import ConnectionFailed
from jupyter_celery.core.events import EventLog
from jupyter_celery.core.protocol import Event, EventKind

MAX_PENDING = 1 << 20  # characters of output kept while Redis is unreachable; older text is dropped
TEXT_KINDS = (EventKind.STDOUT, EventKind.STDERR)
LAZY_DELAY = 0.05  # a lazy event (``started``) waits this long for company before it is written alone
TERMINAL_PATIENCE = 120.0  # seconds a job's last write is retried while Redis is unreachable


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

    def __init__(self, events: EventLog, job_id: str, attempt: int = 1, interval: float = 0.1) -> None:
        self.events = events
        self.job_id = job_id
        self.interval = interval
        self._pending: list[Event] = []  # not yet numbered: text and progress may still merge
        self._unsent: list[tuple[int, Event]] = []  # numbered, a write of them failed: retried first
        self._unsent_objects: list[str] = []
        self._seq = attempt << 32  # sequence numbers make a retried write idempotent
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

    def add_progress(self, event: Event) -> None:
        """Queue a progress event; one still waiting to be written is replaced (only the latest matters)."""
        with self._lock:
            if self._pending and self._pending[-1].kind is EventKind.PROGRESS:
                self._pending[-1] = event
            else:
                self._pending.append(event)
        self._schedule(lazy=False)

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
        # a line is written at once; a partial one (print writes its text, then "\n") waits a moment
        self._schedule(lazy=False, now_ok=text.endswith("\n"))

    def _schedule(self, lazy: bool, now_ok: bool = True) -> None:
        now = time.monotonic()
        due = max(now + (LAZY_DELAY if lazy else 0.0), self._last_write + self.interval)
        if due <= now and now_ok and not self._write_lock.locked():
            self.flush()  # the first event after a quiet period: written now, from this thread
        else:
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

    def _number(self, events: list[Event]) -> list[tuple[int, Event]]:
        numbered = []
        for event in events:
            self._seq += 1
            numbered.append((self._seq, event))
        return numbered

    def flush(self, *final: Event, objects: Sequence[str] = ()) -> None:
        """Write what is pending (and ``final`` after it, and the job's store ``objects``) in one atomic append.

        On a Redis failure the events are kept, numbered, for the next attempt (so a write whose
        reply was lost is not duplicated) and, when ``final`` events were given, the error is raised.
        """
        with self._write_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                dropped, self._dropped = self._dropped, 0
                self._size = 0
            if dropped:
                note = f"[jupyter-celery: {dropped} characters dropped]\n"
                pending.insert(0, Event(EventKind.STDERR, {"text": note}))
            batch = self._unsent + self._number(pending + list(final))
            objects = [*self._unsent_objects, *objects]
            if not batch:
                return
            try:
                self.events.append(self.job_id, *(e for _, e in batch), seqs=[n for n, _ in batch], objects=objects)
                self._unsent, self._unsent_objects = [], []
            except ConnectionFailed:
                self._unsent, self._unsent_objects = batch, objects
                if final:
                    raise
            finally:
                self._last_write = time.monotonic()

    def close(self, *final: Event, objects: Sequence[str] = (), patience: float = TERMINAL_PATIENCE) -> None:
        """Write everything that is left, then ``final`` (the terminal event) and ``objects``, in one append.

        A terminal event must not be lost to a Redis restart: the write is retried with backoff
        for up to ``patience`` seconds before the error is raised.
        """
        self._flusher.cancel(self)
        deadline = time.monotonic() + patience
        delay = 0.1
        try:
            self.flush(*final, objects=objects)
            return
        except ConnectionFailed as exc:
            error = exc
        while self._unsent:  # the numbered batch, final events included, is retried as it is
            if time.monotonic() > deadline:
                raise error
            time.sleep(delay)  # backoff while Redis comes back
            delay = min(delay * 2, 2.0)
            self.flush()
