"""The Celery application shared by the kernel side (sends tasks by name) and the worker side.

Configuration follows DESIGN §4: JSON only, explicit queues and routes with ``python_q`` as the
default (never the implicit ``celery`` queue), late acks with re-delivery of a killed worker's
job, prefetch 1, a visibility timeout above the longest job, results kept as long as streams.
"""

from __future__ import annotations

from celery import Celery
from kombu.entity import Exchange, Queue

from jupyter_celery.core.protocol import (
    DEFAULT_QUEUE,
    QUEUES,
    TASK_ECHO,
    TASK_RUN_CELL,
    TASK_RUN_FUNCTION,
    TASK_RUN_NOTEBOOK,
)
from jupyter_celery.core.queues import VISIBILITY_TIMEOUT
from jupyter_celery.core.settings import Settings


def make_app(settings: Settings, *, name: str = "jupyter_celery") -> Celery:
    """A configured Celery app. It registers no task: the worker side does that."""
    app = Celery(name, broker=settings.broker_url, backend=settings.result_url, set_as_current=False)
    transport_options = {"visibility_timeout": VISIBILITY_TIMEOUT}
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        event_serializer="json",
        task_queues=tuple(Queue(q, Exchange(q, type="direct"), routing_key=q) for q in QUEUES),
        task_default_queue=DEFAULT_QUEUE,
        task_default_exchange=DEFAULT_QUEUE,
        task_default_routing_key=DEFAULT_QUEUE,
        task_create_missing_queues=False,
        task_routes={
            TASK_RUN_CELL: {"queue": DEFAULT_QUEUE},
            TASK_ECHO: {"queue": DEFAULT_QUEUE},
            TASK_RUN_NOTEBOOK: {"queue": DEFAULT_QUEUE},
            TASK_RUN_FUNCTION: {"queue": DEFAULT_QUEUE},
        },
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        worker_prefetch_multiplier=1,
        # A broker restart must not kill running jobs: their events wait for Redis and are then
        # written (idempotently), and their message is acknowledged on the new connection.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options,
        result_backend_transport_options=transport_options,
        result_expires=settings.job_ttl,
        result_extended=False,  # the job spec stays out of the result backend; the job record has the facts
        enable_utc=True,
    )
    return app
