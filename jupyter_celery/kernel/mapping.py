"""``jc.map(fn, items)``: one handle over the chunks (one job each) that run ``fn`` over the items.

A background thread per map sends the chunks, a few at a time: it keeps twice as many chunks in
flight as the queue's workers run at once (so a worker that finishes one finds the next waiting),
and sizes each from the run times measured so far (:mod:`jupyter_celery.kernel.chunking`). Each
chunk is a job of kind ``chunk`` (its own record and stream, followed by the kernel's one reader),
whose result is the list of its items' results and the failures of its items by index.

Cancelling the map stops the thread (no chunk is sent after it) and cancels the chunks in flight:
a queued chunk never starts, a running one stops before its next item. The chunks live as long as
this kernel's handle: the map is sent by this kernel, so a kernel restart stops sending chunks
(the chunks already sent still run, and each can be attached by its id).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jupyter_celery.core.errors import JobCancelled, JobFailed, MapFailed
from jupyter_celery.core.messages import JobSpec
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import KIND_CHUNK, TASK_RUN_FUNCTION, EventKind, new_job_id
from jupyter_celery.core.queues import profile
from jupyter_celery.kernel.chunking import ChunkSizer
from jupyter_celery.kernel.completion import Completion

if TYPE_CHECKING:
    from jupyter_celery.core.codec import Encoded
    from jupyter_celery.kernel.client import Client
    from jupyter_celery.kernel.job import Job

log = logging.getLogger(__name__)
MapCallback = Callable[["MapJob"], Any]


@dataclass(frozen=True)
class ItemError:
    """An item of a map that failed: its index in the items, the error and the worker's traceback."""

    index: int
    error_type: str
    message: str
    traceback: str = ""
    job_id: str = ""  # the chunk that ran it

    def __str__(self) -> str:
        return (
            f"item {self.index}: {self.error_type}: {self.message}"
            if self.message
            else f"item {self.index}: {self.error_type}"
        )


@dataclass
class Chunk:
    start: int
    size: int
    job: Job | None = None


@dataclass(frozen=True)
class MapProgress:
    """Where a map stands: items ended (succeeded or failed), failed, total; rate in items/s."""

    state: str
    done: float
    failed: int
    total: int
    chunks: int
    elapsed: float
    rate: float | None
    eta: float | None


class MapJob:
    """The handle of a map: like a :class:`~jupyter_celery.kernel.job.Job`, over many chunks.

    :meth:`result` is the list of results in the order of the items; :meth:`errors` the items that
    failed, with their index and traceback (the others still run); :meth:`cancel` stops the whole
    map. It works with :func:`jupyter_celery.as_completed`, :func:`~jupyter_celery.wait` and
    :func:`~jupyter_celery.gather`. In a notebook its rich display is one live widget for the
    whole map: items done / total, failures, throughput and ETA.

    >>> squares = jc.map(lambda x: x * x, range(10_000))   # doctest: +SKIP
    >>> squares.result()[:4]                                  # doctest: +SKIP
    [0, 1, 4, 9]
    """

    def __init__(
        self,
        client: Client,
        function: Encoded,
        items: list[Any],
        *,
        queue: str,
        name: str,
        timeout: float | None,
        retry: dict[str, Any] | None,
        environment: dict[str, str],
        sources: dict[str, str] | None = None,
        chunksize: int | None = None,
        map_id: str | None = None,
    ) -> None:
        self.id = map_id or new_job_id()
        self.name = name
        self.queue = queue
        self.total = len(items)
        self.timeout = timeout
        self._client = client
        self._function = function
        self._items = items
        self._retry = retry
        self._environment = environment
        self._sources = sources or {}
        # the queue's worker slots; before any worker's heartbeat is seen, the pool's default concurrency
        slots = client.slots(queue) or profile(queue).concurrency
        self.sizer = ChunkSizer(slots, chunksize)
        self.window = max(2, 2 * slots)  # chunks in flight: each worker finds the next one waiting
        self.chunks: list[Chunk] = []
        self.submitted_at = time.time()
        self.ended_at: float | None = None
        self._next = 0
        self._in_flight = 0
        self._ended_items = 0
        self._failed_items = 0
        self._dispatching = True
        self._cancel_requested = False
        self.dispatch_error: BaseException | None = None
        self._cond = threading.Condition()
        self._submit_lock = threading.Lock()  # cancel() waits for a chunk being sent, then cancels it too
        self._done: Completion[MapJob] = Completion(self, f"map {self.id}")
        self._values: list[Any] | None = None
        self.view: Any = None
        if self.total == 0:
            self._dispatching = False
            self._finish()
        else:
            threading.Thread(target=self._dispatch, name=f"jupyter-celery-map-{self.id[:8]}", daemon=True).start()

    def __repr__(self) -> str:
        p = self.progress()
        return f"<MapJob {self.name!r} on {self.queue}: {p.state}, {p.done:g}/{p.total} items, {p.failed} failed>"

    # --- sending chunks (the map's thread) -------------------------------------------------------

    def _dispatch(self) -> None:
        try:
            while True:
                with self._cond:
                    while self._in_flight >= self.window and not self._cancel_requested:
                        self._cond.wait()
                    if self._cancel_requested or self._next >= self.total:
                        return
                    chunk = Chunk(self._next, self.sizer.next_size(self.total - self._next))
                    self._next += chunk.size
                    self._in_flight += 1
                    self.chunks.append(chunk)
                with self._submit_lock:
                    chunk.job = self._send(chunk)
                chunk.job.add_done_callback(functools.partial(self._chunk_ended, chunk))
        except Exception as exc:  # an item that cannot be sent, the broker unreachable...
            log.warning("map %s stopped sending chunks: %s", self.id, exc)
            with self._cond:
                self.dispatch_error = exc
                self._in_flight -= sum(1 for c in self.chunks if c.job is None)
                self.chunks = [c for c in self.chunks if c.job is not None]
            self._cancel_chunks()
        finally:
            with self._cond:
                self._dispatching = False
                self._items = []  # every chunk has been sent (or never will be): the items are not needed
                finished = self._in_flight == 0
            if finished:
                self._finish()

    def _send(self, chunk: Chunk) -> Job:
        client = self._client
        settings = client.settings
        job_id = new_job_id()
        items = self._items[chunk.start : chunk.start + chunk.size]
        spec = JobSpec(
            id=job_id,
            kind=KIND_CHUNK,
            queue=self.queue,
            name=f"{self.name}[{chunk.start}:{chunk.start + chunk.size}]",
            owner=settings.owner,
            timeout=None if self.timeout is None else self.timeout * chunk.size,
            environment=self._environment,
            function=self._function,
            items=client.codec.encode("items", items, ObjectTag(settings.owner, job_id, "input")),
            start=chunk.start,
            retry=self._retry,
            sources=self._sources,
        )
        objects = [key for e in (self._function, spec.items or {}) for key in client.codec.keys_of(e)]
        return client.submit(spec, TASK_RUN_FUNCTION, objects=objects)

    def _chunk_ended(self, chunk: Chunk, job: Job) -> None:
        """Called from the reader thread when a chunk's job ends."""
        terminal = job.terminal
        with self._cond:
            self._in_flight -= 1
            if terminal is not None and terminal.kind is EventKind.SUCCEEDED:
                manifest = terminal.fields.get("result") or {}
                self.sizer.record(chunk.size, float(manifest.get("seconds", 0.0)))
                self._ended_items += chunk.size
                self._failed_items += int(manifest.get("failed", 0))
            elif terminal is not None and terminal.kind is not EventKind.CANCELLED:
                self._ended_items += chunk.size
                self._failed_items += chunk.size
            self._cond.notify_all()
            finished = self._in_flight == 0 and not self._dispatching
        if finished:
            self._finish()
        elif self.view is not None:
            self.view.touch()

    def _finish(self) -> None:
        with self._cond:
            if self._done.is_set():
                return
            self.ended_at = time.time()
        if self.view is not None:
            self.view.touch()
        self._done.set()  # runs the done callbacks

    def _cancel_chunks(self) -> None:
        for chunk in list(self.chunks):
            if chunk.job is not None and not chunk.job.done():
                with contextlib.suppress(Exception):
                    chunk.job.cancel()

    # --- the Future-like API -----------------------------------------------------------------------

    @property
    def jobs(self) -> list[Job]:
        """The chunks sent so far, one job each, in the order of their items."""
        with self._cond:
            return [c.job for c in self.chunks if c.job is not None]

    def done(self) -> bool:
        return self._done.is_set()

    def cancelled(self) -> bool:
        """Whether the map was cancelled before all its items had run."""
        return self.done() and self._cancel_requested and self._ended_items < self.total

    def running(self) -> bool:
        return not self.done() and any(j.state in ("running", "retrying") for j in self.jobs)

    def cancel(self) -> bool:
        """Stop the whole map: no further chunk is sent, queued chunks never start, running chunks
        stop before their next item. False if the map had already ended."""
        if self.done():
            return False
        with self._cond:
            self._cancel_requested = True
            self._cond.notify_all()
        with self._submit_lock:  # a chunk being sent now is cancelled with the others
            self._cancel_chunks()
        if self.view is not None:
            self.view.touch()
        return True

    @property
    def cancel_requested(self) -> bool:
        return self._cancel_requested

    def wait(self, timeout: float | None = None) -> bool:
        """Block until every chunk has ended (or ``timeout`` seconds passed); return whether they did."""
        if not self._done.wait(timeout):
            return False
        if self.view is not None:
            self.view.finish()  # the final state, sent while the cell still runs (headless runs keep it)
        return True

    def add_done_callback(self, fn: MapCallback) -> None:
        """Call ``fn(map)`` when every chunk has ended (at once if they have)."""
        self._done.add_callback(fn)

    def result(self, timeout: float | None = None, *, errors: str = "raise") -> list[Any]:
        """The results, in the order of the items (waits up to ``timeout`` seconds).

        When items failed: ``errors="raise"`` (default) raises :class:`MapFailed`, which lists them
        (see also :meth:`errors`); ``errors="none"`` puts None in their place.
        A cancelled map raises :class:`JobCancelled`.
        """
        if errors not in ("raise", "none"):
            raise ValueError(f'errors must be "raise" or "none", not {errors!r}')
        if not self.wait(timeout):
            raise TimeoutError(f"map {self.name!r} did not end within {timeout}s")
        if self.dispatch_error is not None:
            raise JobFailed(self.id, f"map {self.name!r} could not send its items: {self.dispatch_error}")
        if self.cancelled():
            raise JobCancelled(
                self.id, f"map {self.name!r} was cancelled after {self._ended_items} of {self.total} items"
            )
        failures = self.errors()
        if failures and errors == "raise":
            raise MapFailed(self.id, self.name, self.total, failures)
        return list(self._gather())

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error :meth:`result` would raise (None when every item succeeded)."""
        try:
            self.result(timeout)
        except JobFailed as exc:
            return exc
        return None

    def _gather(self) -> list[Any]:
        if self._values is None:
            values: list[Any] = []
            for chunk in sorted(self.chunks, key=lambda c: c.start):
                job = chunk.job
                results = job.result() if job is not None and job.state == "succeeded" else None
                values.extend(results if isinstance(results, list) else [None] * chunk.size)
            self._values = values
        return self._values

    def errors(self) -> list[ItemError]:
        """The items that failed so far, by index: their error type, message and traceback."""
        failures: list[ItemError] = []
        for chunk in self.chunks:
            job = chunk.job
            terminal = None if job is None else job.terminal
            if job is None or terminal is None or terminal.kind is EventKind.CANCELLED:
                continue
            fields = terminal.fields
            if terminal.kind is EventKind.SUCCEEDED:
                encoded = (fields.get("result") or {}).get("errors")
                if encoded:
                    for index, error_type, message, tb in self._client.codec.decode("errors", encoded):
                        failures.append(ItemError(int(index), str(error_type), str(message), str(tb), job.id))
                continue
            error_type = str(fields.get("error_type") or terminal.kind.value)
            message = str(fields.get("message") or fields.get("reason") or "")
            tb = str(fields.get("traceback") or "")
            failures += [ItemError(chunk.start + i, error_type, message, tb, job.id) for i in range(chunk.size)]
        return sorted(failures, key=lambda e: e.index)

    def progress(self) -> MapProgress:
        """Items ended (succeeded or failed) so far, failures, throughput and the estimated time left."""
        with self._cond:
            ended, failed, chunks = self._ended_items, self._failed_items, list(self.chunks)
        running = 0.0
        for chunk in chunks:
            job = chunk.job
            if job is not None and not job.done() and job.progress is not None:
                running += job.progress[0]
        done = ended + running
        starts = [c.job.started_at for c in chunks if c.job is not None and c.job.started_at is not None]
        begin = min(starts) if starts else None
        end = self.ended_at or time.time()
        elapsed = end - self.submitted_at
        rate = done / (end - begin) if begin is not None and done and end > begin else None
        eta = (self.total - done) / rate if rate and not self.done() else None
        return MapProgress(self.state, done, failed, self.total, len(chunks), elapsed, rate, eta)

    @property
    def state(self) -> str:
        """queued, running, succeeded, failed (some items failed) or cancelled."""
        if self.done():
            if self.cancelled():
                return "cancelled"
            return "failed" if self._failed_items or self.dispatch_error is not None else "succeeded"
        if any(j.started_at is not None for j in self.jobs):
            return "running"
        return "queued"

    def _ipython_display_(self) -> None:
        from jupyter_celery.kernel.map_view import show_map

        show_map(self)
