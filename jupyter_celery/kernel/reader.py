"""The kernel's one reader: a thread that follows every live job of this kernel.

It waits in a single ``XREAD BLOCK`` over all the job streams it follows (plus its own wake-up
stream, so a new job is followed at once), from each job's last seen id, and hands the events to
the :class:`~jupyter_celery.kernel.job.Job` objects. Waiting costs one command per block period,
whatever the number of jobs.

On idle wake-ups it looks after jobs that have been silent for a while, all of them in one round
trip: a running job whose worker stopped sending heartbeats ends ``lost``; a job Celery recorded
as failed or revoked without an event on its stream ends accordingly; a queued job whose queue
has no live worker gets a note. Those endings are written to the stream (the event log keeps
only the first terminal event) and read back like any other event.

After a Redis restart it reconnects with backoff and resumes from the last ids: nothing is lost
and nothing is read twice.
"""

from __future__ import annotations

import atexit
import json
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

from jupyter_celery.core.events import READER_STREAM_MAXLEN, REDIS_ERRORS, START_ID, EventLog
from jupyter_celery.core.liveness import Heartbeats
from jupyter_celery.core.protocol import Event, EventKind

if TYPE_CHECKING:
    from jupyter_celery.kernel.client import Client
    from jupyter_celery.kernel.job import Job

log = logging.getLogger(__name__)

MAX_BACKOFF = 5.0


class Reader:
    """Follows this kernel's live jobs from one background thread."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.id = uuid.uuid4().hex
        settings = client.settings
        self.block = settings.block_seconds
        self.log = EventLog.connect(settings, block_seconds=self.block)
        self.heartbeats = Heartbeats(self.log.redis, self.log.keys, settings.heartbeat_interval)
        # a job silent this long has its liveness checked, at most this often (one round trip for all)
        self.liveness_interval = settings.liveness_interval
        self._wake_key = self.log.keys.reader(self.id)
        self._wake_last = START_ID
        self._jobs: dict[str, Job] = {}
        self._positions: dict[str, str] = {}
        self._last_seen: dict[str, float] = {}
        self._last_check = time.monotonic()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self.connected = True
        self._thread = threading.Thread(target=self._run, name="jupyter-celery-reader", daemon=True)
        self._thread.start()
        atexit.register(self.stop)

    def follow(self, job: Job, *, woken: bool = False) -> None:
        """Follow ``job`` from its last seen id. ``woken``: the submit already woke the reader."""
        with self._lock:
            self._jobs[job.id] = job
            self._positions[job.id] = job.last_id
            self._last_seen[job.id] = time.monotonic()
        if not woken:
            self.wake(job.id)

    def wake(self, job_id: str = "") -> None:
        """Interrupt the current blocking read (so the reader picks up a new job now)."""
        try:
            pipe = self.log.redis.pipeline(transaction=False)
            pipe.xadd(self._wake_key, {"job": job_id}, maxlen=READER_STREAM_MAXLEN, approximate=True)
            pipe.expire(self._wake_key, self.client.settings.job_ttl)
            pipe.execute()
        except REDIS_ERRORS:
            pass  # the reader will see the job at its next wake-up anyway

    def following(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def stop(self) -> None:
        """Stop following: the thread ends after its current read, without a word."""
        self._stopped.set()

    def _streams(self) -> dict[str, str]:
        with self._lock:
            streams = {self._wake_key: self._wake_last}
            streams.update({self.log.keys.events(j): pos for j, pos in self._positions.items()})
            return streams

    def _run(self) -> None:
        backoff = 0.1
        while not self._stopped.is_set():
            try:
                entries = self.log.read_streams(self._streams(), self.block)
                self.connected = True
                backoff = 0.1
                self._dispatch(entries)
                self._maybe_check_liveness()
            except REDIS_ERRORS as exc:
                if self._stopped.is_set():
                    return  # closed while blocked in its read: not a lost Redis
                if self.connected:
                    log.warning("jupyter-celery reader lost Redis (%s); reconnecting", exc)
                self.connected = False
                self._stopped.wait(backoff)  # backoff before reconnecting
                backoff = min(backoff * 2, MAX_BACKOFF)
            except Exception:  # never let the reader die: the jobs would hang
                log.exception("jupyter-celery reader error")
                self._stopped.wait(1.0)

    def _dispatch(self, entries: list[tuple[str, str, dict[str, str]]]) -> None:
        prefix = self.log.keys.events("")[: -len(":events")]
        now = time.monotonic()
        for stream, entry_id, wire in entries:
            if stream == self._wake_key:
                self._wake_last = entry_id
                continue
            job_id = stream[len(prefix) : -len(":events")]
            event = Event.from_wire(entry_id, wire)
            with self._lock:
                job = self._jobs.get(job_id)
                if job is None:
                    continue
                self._positions[job_id] = entry_id
                self._last_seen[job_id] = now
                if event.kind.terminal:
                    del self._jobs[job_id], self._positions[job_id], self._last_seen[job_id]
            job._receive(event)

    def _maybe_check_liveness(self) -> None:
        now = time.monotonic()
        if now - self._last_check < self.liveness_interval:
            return
        self._last_check = now
        with self._lock:
            quiet = self.liveness_interval
            silent = [j for j in self._jobs.values() if now - self._last_seen.get(j.id, now) >= quiet]
        if silent:
            self.check_liveness(silent)

    def check_liveness(self, jobs: list[Job]) -> None:
        """End silent jobs whose worker died or that Celery recorded as ended; note queues without workers."""
        running = [j for j in jobs if j.state == "running" and j.worker]
        hostnames = sorted({j.worker for j in running})
        queues = sorted({j.queue for j in jobs if j.state == "queued" and j.queue})
        backend = self.client.app.backend
        pipe = self.log.redis.pipeline(transaction=False)
        self.heartbeats.queue_pipeline(pipe, hostnames, queues)
        replies = list(pipe.execute())
        alive, counts = Heartbeats.parse(replies, hostnames, queues)
        metas = backend.client.mget([backend.get_key_for_task(j.id) for j in jobs])
        for job, meta in zip(jobs, metas, strict=True):
            ending = self._ending_from_celery(meta)
            if ending is None and job in running and job.worker not in alive:
                reason = f"its worker {job.worker} stopped (no heartbeat for {self.heartbeats.ttl:g}s)"
                ending = Event(EventKind.LOST, {"reason": reason})
                self.client.revoke(job.id, terminate=False)  # a re-delivery must not run it again
            if ending is not None:
                self.log.append(job.id, ending)
            elif job.state == "queued":
                job._note(None if counts.get(job.queue) else f"no worker is consuming {job.queue}")

    @staticmethod
    def _ending_from_celery(meta: Any) -> Event | None:
        """A terminal event for a job Celery recorded as failed or revoked (None otherwise)."""
        if not meta:
            return None
        try:
            data = json.loads(meta)
        except (TypeError, ValueError):
            return None
        status = data.get("status")
        result = data.get("result") or {}
        if status == "REVOKED":
            return Event(EventKind.CANCELLED, {"reason": "revoked"})
        if status == "FAILURE":
            error_type = str(result.get("exc_type", "Error")) if isinstance(result, dict) else "Error"
            message = result.get("exc_message", "") if isinstance(result, dict) else str(result)
            if isinstance(message, list):
                message = " ".join(str(m) for m in message)
            return Event(
                EventKind.FAILED, {"error_type": error_type, "message": str(message), "reason": "recorded by Celery"}
            )
        return None
