"""The kernel's connection to the stack: it sends jobs by task name and reads their streams.

One :class:`Client` per kernel process, built on first use from the settings of that moment
(:func:`get_client`). The kernel never imports worker code: tasks are reached by name only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from kombu.exceptions import OperationalError

from jupyter_celery.core.app import make_app
from jupyter_celery.core.codec import Codec
from jupyter_celery.core.datasets import Catalog
from jupyter_celery.core.errors import ConnectionFailed
from jupyter_celery.core.events import EventLog
from jupyter_celery.core.protocol import TASK_RUN_CELL, Event, EventKind, JobSpec
from jupyter_celery.core.queues import HARD_LIMIT_GRACE, profile
from jupyter_celery.core.settings import Settings, redact_url
from jupyter_celery.core.store import store_for
from jupyter_celery.kernel.job import Job


class Client:
    """Submits jobs and follows them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app = make_app(settings, name="jupyter_celery.kernel")
        self.events = EventLog.connect(settings, block_seconds=settings.block_seconds)
        self.store = store_for(settings)
        self.codec = Codec(self.store, settings.inline_limit, settings.frame_format)
        self.catalog = Catalog(self.store, settings.owner)

    def submit(self, spec: JobSpec, task: str = TASK_RUN_CELL, objects: Sequence[str] = ()) -> Job:
        """Record the job, add its ``queued`` event, then send the task by name to its queue.

        ``objects`` are the store keys of the job's inputs, recorded with the job so that ``gc`` keeps them.
        """
        profile(spec.queue)  # an unknown queue is a clear error before anything is written
        record = {
            "id": spec.id,
            "name": spec.name,
            "kind": spec.kind,
            "queue": spec.queue,
            "owner": spec.owner,
            "submitted": f"{spec.submitted:.6f}",
        }
        queued = self.events.create(
            spec.id, record, Event(EventKind.QUEUED, {"queue": spec.queue, "name": spec.name}), objects
        )
        limits = {}
        if spec.timeout:
            limits = {"soft_time_limit": spec.timeout, "time_limit": spec.timeout + HARD_LIMIT_GRACE}
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
            reason = f"could not be sent to the broker at {redact_url(self.settings.broker_url)}: {exc}"
            self.events.append(
                spec.id,
                Event(
                    EventKind.FAILED,
                    {"error_type": "ConnectionFailed", "message": reason, "reason": "submit"},
                ),
            )
            raise ConnectionFailed(f"job {spec.id} {reason}") from exc
        return Job(spec.id, self, name=spec.name, queue=spec.queue, seen=[queued])

    def revoke(self, job_id: str) -> None:
        """Ask the workers to drop (if queued) or terminate (if running) a job."""
        self.app.control.revoke(job_id, terminate=True, signal="SIGTERM")

    def close(self) -> None:
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
