"""A job as the notebook sees it: a ``concurrent.futures.Future``-like handle on its stream.

The kernel's reader thread feeds it the job's events (see :mod:`jupyter_celery.kernel.reader`);
everything else reads them. Results are decoded on demand, in the caller's thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from jupyter_celery.core.errors import (
    DecodingError,
    JobCancelled,
    JobFailed,
    JobLost,
    JobTimeout,
    RemoteError,
)
from jupyter_celery.core.events import START_ID
from jupyter_celery.core.protocol import KIND_CELL, KIND_CHUNK, KIND_FUNCTION, Event, EventKind
from jupyter_celery.kernel.completion import Completion

if TYPE_CHECKING:
    from jupyter_celery.kernel.client import Client

DoneCallback = Callable[["Job"], Any]


_NO_VALUE = object()


class Job:
    """A submitted (or re-attached) job: a ``%%celery`` cell, a function call (:func:`jupyter_celery.submit`)
    or a chunk of a map.

    Like :class:`concurrent.futures.Future`: :meth:`result`, :meth:`exception`, :meth:`done`,
    :meth:`running`, :meth:`cancelled`, :meth:`cancel`, :meth:`add_done_callback`; it works with
    :func:`jupyter_celery.as_completed`, :func:`jupyter_celery.wait` and :func:`jupyter_celery.gather`.
    In a notebook its rich display is the live progress widget.

    >>> job = jc.submit(pow, 2, 10)      # doctest: +SKIP
    >>> job.result(timeout=60)           # a function job: the function's return value
    1024
    >>> jc.attach(job.id).result()       # the same, from any kernel (after a restart too)  # doctest: +SKIP
    1024
    >>> cell_job.result()                # a cell job: the cell's output variables, by name  # doctest: +SKIP
    {'total': 45}
    """

    def __init__(
        self,
        job_id: str,
        client: Client,
        *,
        name: str = "",
        queue: str = "",
        kind: str = "cell",
        seen: list[Event] | None = None,
    ) -> None:
        self.id = job_id
        self.name = name
        self.queue = queue
        self.kind = kind
        self._client = client
        self._events: list[Event] = list(seen or [])
        self.last_id = self._events[-1].id if self._events else START_ID
        self.worker = ""
        self.note: str | None = None  # e.g. "no worker is consuming python_q"
        self.progress: tuple[float, float | None, str] | None = None
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.submitted_at = self._events[0].ts if self._events else time.time()
        self._lock = threading.RLock()
        self._done: Completion[Job] = Completion(self, f"job {job_id}")
        self._listeners: list[SimpleQueue[Event]] = []
        self._value: Any = _NO_VALUE  # the decoded return value of a function job, once asked for
        self._cancel_requested = False
        self.view: Any = None  # the widget (kernel/views.py), when one was made
        # Frames this kernel sent, by store key, as copy-on-write snapshots taken at submit: an output with
        # the same key (the same bytes) is bound from here instead of being downloaded again.
        self.sent_frames: dict[str, Any] = {}
        for event in self._events:
            self._apply(event)
        if self._events and self._events[-1].kind.terminal:
            self._done.set()

    # --- fed by the reader thread -------------------------------------------------------------

    def _apply(self, event: Event) -> None:
        if event.kind is EventKind.STARTED:
            self.worker = str(event.fields.get("worker", ""))
            self.started_at = event.ts
            self.note = None
        elif event.kind is EventKind.PROGRESS:
            total = event.fields.get("total")
            self.progress = (
                float(event.fields.get("done", 0)),
                float(total) if total not in (None, "", "None") else None,
                str(event.fields.get("message", "")),
            )
        elif event.kind.terminal:
            self.ended_at = event.ts

    def _receive(self, event: Event) -> None:
        with self._lock:
            if self._done.is_set():
                return
            self._events.append(event)
            self.last_id = event.id
            self._apply(event)
            listeners = list(self._listeners)
            view = self.view
        for listener in listeners:
            listener.put(event)
        if view is not None:
            view.on_event(event)
        if event.kind.terminal:
            self._done.set()  # runs the done callbacks

    def _note(self, note: str | None) -> None:
        self.note = note
        if self.view is not None:
            self.view.touch()

    # --- the Future-like API ----------------------------------------------------------------------

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<Job {self.id}{label} on {self.queue or '?'}: {self.state}>"

    def events(self) -> list[Event]:
        """The job's events so far, oldest first (the full history when re-attached)."""
        with self._lock:
            return list(self._events)

    @property
    def terminal(self) -> Event | None:
        """The event that ended the job, if it has ended."""
        with self._lock:
            last = self._events[-1] if self._events else None
        return last if last is not None and last.kind.terminal else None

    @property
    def state(self) -> str:
        """queued, running, retrying, succeeded, failed, cancelled or lost."""
        with self._lock:
            last = next((e for e in reversed(self._events) if e.kind not in _DETAIL_KINDS), None)
        if last is None:
            return "queued"  # submitted (its `queued` event may come after others: it only counts alone)
        state: str = "running" if last.kind is EventKind.STARTED else last.kind.value
        return state

    def done(self) -> bool:
        return self._done.is_set()

    def running(self) -> bool:
        return self.state in ("running", "retrying")

    def cancelled(self) -> bool:
        return self.state == "cancelled"

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended (or ``timeout`` seconds passed); return whether it ended."""
        return self._done.wait(timeout)

    def add_done_callback(self, fn: DoneCallback) -> None:
        """Call ``fn(job)`` when the job ends (at once if it has ended), from the reader thread."""
        self._done.add_callback(fn)

    def cancel(self) -> bool:
        """Ask the job to stop: a queued job never starts; a running one stops at its next
        ``progress()`` call or output line, or is terminated after a grace period; a job waiting
        for its next attempt (``retrying``) ends at once and is not tried again.

        Returns False if the job had already ended, True if the request was made.
        """
        if self.done():
            return False
        self._cancel_requested = True
        self._client.cancel(self.id)
        if self.state == "retrying":
            # Its next attempt waits in a worker's timer until its backoff is over, and only then
            # would Celery see the revoke: end it now (a later attempt finds it ended and skips).
            ended = Event(EventKind.CANCELLED, {"reason": "cancelled while waiting to be tried again"})
            self._client.events.append(self.id, ended)
        if self.view is not None:
            self.view.touch()
        return True

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def manifest(self, timeout: float | None = None) -> dict[str, Any]:
        """The result manifest of a succeeded job; the matching error for any other ending."""
        if not self.wait(timeout):
            raise TimeoutError(f"job {self.id} did not end within {timeout}s")
        terminal = self.terminal
        assert terminal is not None
        error = self._error(terminal)
        if error is not None:
            raise error
        manifest: dict[str, Any] = terminal.fields.get("result") or {}
        return manifest

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error the job ended with (None if it succeeded); waits up to ``timeout`` seconds."""
        try:
            self.manifest(timeout)
        except JobFailed as exc:
            return exc
        return None

    @property
    def returns_value(self) -> bool:
        """Whether :meth:`result` is a return value (function and chunk jobs), not variables by name."""
        return self.kind in (KIND_FUNCTION, KIND_CHUNK)

    def result(self, timeout: float | None = None) -> Any:
        """What the job produced (waits up to ``timeout`` seconds); raises the job's error if it failed.

        A function job: the function's return value. A chunk of a map: the list of its items'
        results. A cell job: its output variables by name (a dict).
        """
        if self.returns_value:
            return self.value(timeout)
        values, _skipped = self.outputs(timeout, strict=False)
        return values

    def outputs(self, timeout: float | None = None, *, strict: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
        """The output variables and the ones that could not be brought back (name -> reason)."""
        manifest = self.manifest(timeout)
        values: dict[str, Any] = {}
        skipped: dict[str, str] = dict(manifest.get("skipped", {}))
        for name, encoded in manifest.get("outputs", {}).items():
            try:
                values[name] = self.decode(name, encoded)
            except DecodingError as exc:
                if strict:
                    raise
                skipped[name] = exc.reason
        return values, skipped

    def value(self, timeout: float | None = None) -> Any:
        """The value of the cell's last expression (None when it had none), or the function's return value.

        Decoded once (a large value comes from the store on the first call only).
        """
        manifest = self.manifest(timeout)
        if "value" not in manifest:
            return None
        with self._lock:
            if self._value is _NO_VALUE:
                self._value = self.decode("value", manifest["value"])
            return self._value

    def bind(self, namespace: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        """Put a cell job's output variables into ``namespace`` (default: the notebook's); return them."""
        if self.kind != KIND_CELL:
            raise TypeError(f"job {self.id} is a {self.kind} job: it has a result (job.result()), not variables")
        values: dict[str, Any] = self.result(timeout)
        if namespace is None:
            from IPython import get_ipython

            shell = get_ipython()
            if shell is None:
                raise RuntimeError("bind() without a namespace needs IPython")
            namespace = shell.user_ns
        namespace.update(values)
        return values

    def with_view(self, make: Callable[[list[Event]], Any]) -> Any:
        """The job's view, made by ``make(events so far)`` on first use (no event missed or doubled)."""
        with self._lock:
            if self.view is None:
                self.view = make(list(self._events))
            return self.view

    def listen(self) -> tuple[list[Event], SimpleQueue[Event]]:
        """The events so far and a queue that receives every later one (nothing missed in between)."""
        listener: SimpleQueue[Event] = SimpleQueue()
        with self._lock:
            self._listeners.append(listener)
            return list(self._events), listener

    def _error(self, terminal: Event) -> JobFailed | None:
        fields = terminal.fields
        if terminal.kind is EventKind.SUCCEEDED:
            return None
        message = str(fields.get("message") or fields.get("reason") or terminal.kind.value)
        if terminal.kind is EventKind.CANCELLED:
            return JobCancelled(self.id, f"job {self.id} was cancelled: {message}")
        if terminal.kind is EventKind.LOST:
            return JobLost(self.id, f"job {self.id} was lost: {message}")
        if fields.get("reason") == "timeout":
            return JobTimeout(self.id, f"job {self.id}: {message}")
        if fields.get("traceback"):
            return RemoteError(
                self.id,
                str(fields.get("error_type")),
                str(fields.get("message", "")),
                str(fields["traceback"]),
                self.worker,
            )
        return JobFailed(self.id, f"job {self.id} failed: {fields.get('error_type')}: {message}")

    def decode(self, name: str, encoded: dict[str, Any]) -> Any:
        """One output value. A frame this kernel sent with the job comes from its snapshot, not the store.

        (pandas' copy-on-write makes the shallow copy an independent frame; a pyarrow Table is immutable.)
        """
        snapshot = self.sent_frames.get(encoded.get("key", "")) if encoded.get("enc") == "frame" else None
        if snapshot is not None:
            copy = getattr(snapshot, "copy", None)
            return copy(deep=False) if copy is not None else snapshot
        return self._client.codec.decode(name, encoded)

    def _ipython_display_(self) -> None:
        from jupyter_celery.kernel.views import show

        show(self)


_DETAIL_KINDS = frozenset({EventKind.PROGRESS, EventKind.STDOUT, EventKind.STDERR, EventKind.DISPLAY, EventKind.QUEUED})
