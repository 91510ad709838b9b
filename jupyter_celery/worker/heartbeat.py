"""The worker's heartbeat: a Celery bootstep in the worker's main process.

Every ``JUPYTER_CELERY_HEARTBEAT_INTERVAL`` seconds it refreshes the worker's heartbeat key and its entry in
the workers-per-queue index (see :mod:`jupyter_celery.core.liveness`); on a clean shutdown it
removes them. A worker that is killed simply stops beating, and its key expires.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import bootsteps

from jupyter_celery.core.errors import ConnectionFailed
from jupyter_celery.core.events import REDIS_ERRORS
from jupyter_celery.core.liveness import Heartbeats
from jupyter_celery.worker.context import context

log = logging.getLogger(__name__)


class Heartbeat(bootsteps.StartStopStep):  # type: ignore[misc]
    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None

    def _queues(self, worker: Any) -> list[str]:
        return sorted(worker.app.amqp.queues.consume_from or worker.app.amqp.queues)

    def _beats(self) -> Heartbeats:
        ctx = context()
        return Heartbeats(ctx.events.redis, ctx.events.keys, ctx.settings.heartbeat_interval)

    def beat(self, worker: Any) -> None:
        try:
            self._beats().beat(worker.hostname, self._queues(worker), os.getpid(), int(worker.concurrency or 1))
        except (*REDIS_ERRORS, ConnectionFailed) as exc:
            log.warning("jupyter-celery heartbeat failed: %s", exc)

    def start(self, worker: Any) -> None:
        self.beat(worker)
        interval = context().settings.heartbeat_interval
        self.tref = worker.timer.call_repeatedly(interval, self.beat, (worker,), priority=10)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
        try:
            self._beats().stop(worker.hostname, self._queues(worker))
        except (*REDIS_ERRORS, ConnectionFailed):
            pass
