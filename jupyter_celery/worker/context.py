"""Per-process resources of a worker: the event log, the store and the codec.

They are created lazily in the process that uses them, so each prefork child builds its own
after the fork (sockets and boto3 clients must not be shared across processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jupyter_celery.core.codec import Codec
from jupyter_celery.core.events import EventLog
from jupyter_celery.core.settings import Settings
from jupyter_celery.core.store import Store, store_for


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    events: EventLog
    store: Store
    codec: Codec
    pid: int


_settings: Settings | None = None
_context: WorkerContext | None = None


def configure(settings: Settings) -> None:
    """Set the settings built at the worker's entry point."""
    global _settings, _context  # noqa: PLW0603 - one context per process, by design
    _settings = settings
    _context = None


def context() -> WorkerContext:
    """This process's resources, created on first use after a fork."""
    global _context  # noqa: PLW0603
    if _context is None or _context.pid != os.getpid():
        settings = _settings or Settings.from_env()
        store = store_for(settings)
        _context = WorkerContext(
            settings=settings,
            events=EventLog.connect(settings),
            store=store,
            codec=Codec(store, settings.inline_limit, settings.frame_format),
            pid=os.getpid(),
        )
    return _context
