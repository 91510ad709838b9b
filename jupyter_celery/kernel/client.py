"""The kernel's connection to the stack: it sends jobs by task name and follows them.

One :class:`Client` per kernel process, built on first use from the settings of that moment
(:func:`get_client`). The kernel never imports worker code: tasks are reached by name only.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import Any

from kombu.exceptions import OperationalError

from jupyter_celery.core.app import make_app
from jupyter_celery.core.codec import Codec
from jupyter_celery.core.datasets import Catalog
from jupyter_celery.core.errors import ConnectionFailed, JupyterCeleryError
from jupyter_celery.core.events import REDIS_ERRORS, EventLog
from jupyter_celery.core.liveness import Heartbeats
from jupyter_celery.core.messages import JobSpec
from jupyter_celery.core.protocol import TASK_RUN_CELL, Event, EventKind
from jupyter_celery.core.queues import hard_limit, profile
from jupyter_celery.core.settings import Settings, redact_url
from jupyter_celery.core.store import store_for
from jupyter_celery.kernel.job import Job
from jupyter_celery.kernel.reader import Reader


class Client:
    """Submits jobs, follows them (through one reader thread) and cancels them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = make_app(settings, name="jupyter_celery.kernel")
        self.events = EventLog.connect(settings)
        self.store = store_for(settings)
        self.codec = Codec(self.store, settings.inline_limit, settings.frame_format)
        self.catalog = Catalog(self.store, settings.owner)
        self.jobs: dict[str, Job] = {}  # the jobs this kernel submitted or attached, by id
        self.maps: dict[str, Any] = {}  # the maps this kernel started (kernel/mapping.py), by id
        self._reader: Reader | None = None
        self._lock = threading.Lock()

    @property
    def reader(self) -> Reader:
        with self._lock:
            if self._reader is None:
                self._reader = Reader(self)
            return self._reader

    def submit(self, spec: JobSpec, task: str = TASK_RUN_CELL, objects: Sequence[str] = ()) -> Job:
        """Record the job, add its ``queued`` event, then send the task by name to its queue.

        ``objects`` are the store keys of the job's inputs, recorded with the job so that ``gc`` keeps them.
        """
        profile(spec.queue)  # an unknown queue is a clear error before anything is written
        reader = self.reader
        record = {
            "id": spec.id,
            "name": spec.name,
            "kind": spec.kind,
            "queue": spec.queue,
            "owner": spec.owner,
            "submitted": f"{spec.submitted:.6f}",
        }
        job = Job(spec.id, self, name=spec.name, queue=spec.queue, kind=spec.kind)
        self.jobs[job.id] = job
        queued = Event(EventKind.QUEUED, {"queue": spec.queue, "name": spec.name})
        # The record and `queued` event are written while send_task builds its message (it takes
        # ~1 ms of Python): one round trip less on the way of every job.
        created = self.events.start_create(spec.id, record, queued, objects)
        limits = {}
        if spec.timeout:
            limits = {"soft_time_limit": spec.timeout, "time_limit": hard_limit(spec.timeout)}
        try:
            self.app.send_task(
                task,
                args=[spec.to_message()],
                task_id=spec.id,
                queue=spec.queue,
                routing_key=spec.queue,
                argsrepr=f"[<{spec.kind} job {spec.name or spec.id}>]",  # not a repr of the whole spec
                kwargsrepr="{}",
                **limits,
            )
        except OperationalError as exc:
            created()
            reason = f"could not be sent to the broker at {redact_url(self.settings.broker_url)}: {exc}"
            fields = {"error_type": "ConnectionFailed", "message": reason, "reason": "submit"}
            self.events.append(spec.id, Event(EventKind.FAILED, fields))
            reader.follow(job)
            raise ConnectionFailed(f"job {spec.id} {reason}") from exc
        try:
            created()
        except ConnectionFailed:
            self.revoke(spec.id)  # it was sent but cannot be followed: do not let it run unseen
            raise
        # Followed (from the start of its stream) once sent: waking the reader earlier would make it
        # compete with send_task for the GIL; now its wake-up overlaps with the worker's own work.
        reader.follow(job)
        return job

    def slots(self, queue: str) -> int:
        """How many jobs of ``queue`` its live workers run at once (0 when none is alive or known)."""
        try:
            return Heartbeats(self.events.redis, self.events.keys, self.settings.heartbeat_interval).slots(queue)
        except REDIS_ERRORS as exc:
            raise ConnectionFailed(f"cannot reach Redis at {redact_url(self.settings.events_url)}: {exc}") from exc

    def attach(self, job_id: str) -> Job:
        """A handle on an existing job (from any kernel): its history replayed, then followed live."""
        known = self.jobs.get(job_id)
        if known is not None:
            return known
        try:
            record = self.events.record(job_id)
        except REDIS_ERRORS as exc:
            raise ConnectionFailed(f"cannot reach Redis at {redact_url(self.settings.events_url)}: {exc}") from exc
        if not record:
            raise JupyterCeleryError(f"no job {job_id!r} (unknown, or expired after {self.settings.job_ttl}s)")
        history = self.events.history(job_id)
        job = Job(
            job_id,
            self,
            name=record.get("name", ""),
            queue=record.get("queue", ""),
            kind=record.get("kind", ""),
            seen=history,
        )
        self.jobs[job_id] = job
        if not job.done():
            self.reader.follow(job)
        return job

    def cancel(self, job_id: str) -> None:
        """Ask for a job to stop: flag it for its worker, and revoke it (drops it if still queued)."""
        self.events.request_cancel(job_id)
        self.revoke(job_id)

    def revoke(self, job_id: str, *, terminate: bool = False) -> None:
        with contextlib.suppress(*REDIS_ERRORS, OperationalError):
            self.app.control.revoke(job_id, terminate=terminate, signal="SIGTERM")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.stop()
        self.events.redis.close()
        self.app.close()


_client: Client | None = None
_lock = threading.Lock()


def get_client() -> Client:
    """The kernel's client, built with the settings of the first call."""
    global _client  # noqa: PLW0603 - one client per kernel process
    with _lock:
        if _client is None:
            _client = Client(Settings.from_env())
        return _client


def reset_client() -> None:
    """Forget the client (the next use re-reads the settings)."""
    global _client  # noqa: PLW0603
    with _lock:
        if _client is not None:
            _client.close()
        _client = None
