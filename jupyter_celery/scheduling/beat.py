"""The beat process: RedBeat's scheduler, queueing notebook runs through the registry.

Run it with ``jupyter-celery beat`` (``jupyter-celery up`` starts one). Schedules are read from
Redis at every tick, so they can be added, changed, paused and removed without a restart;
RedBeat's lock (``<p>:beat::lock``) lets one beat at a time queue runs, and a second one waits
to take over. Beat never runs inside the Jupyter server.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any

from celery import Celery
from redbeat.schedulers import RedBeatScheduler

from jupyter_celery.core.app import make_app
from jupyter_celery.core.protocol import TASK_RUN_NOTEBOOK
from jupyter_celery.core.settings import Settings
from jupyter_celery.scheduling.entries import DEFAULT_MAX_INTERVAL, NotebookEntry, configure_redbeat
from jupyter_celery.scheduling.registry import Registry


class NotebookScheduler(RedBeatScheduler):  # type: ignore[misc]
    """RedBeat's scheduler whose due notebook entries become runs queued by :meth:`Registry.dispatch`.

    The run's job record and ``queued`` event are written here, before the task is sent, so a
    run started by beat has the same history and stream as one started from a notebook.
    """

    Entry = NotebookEntry

    def __init__(self, app: Celery, *args: Any, settings: Settings | None = None, **kwargs: Any) -> None:
        super().__init__(app, *args, **kwargs)
        self.registry = Registry(settings or Settings.from_env(), app=app)

    def send_task(self, name: str, args: Any = (), kwargs: Any = None, **options: Any) -> Any:
        if name != TASK_RUN_NOTEBOOK:
            return super().send_task(name, args, kwargs, **options)
        owner, schedule = args
        ticket = self.registry.dispatch(owner, schedule, trigger="beat")
        return SimpleNamespace(id=ticket.run_id) if ticket is not None else None


def beat_app(settings: Settings, max_interval: float = DEFAULT_MAX_INTERVAL) -> Celery:
    return configure_redbeat(make_app(settings, name="jupyter_celery.beat"), settings, max_interval)


def run_beat(
    settings: Settings,
    *,
    max_interval: float = DEFAULT_MAX_INTERVAL,
    loglevel: str = "INFO",
    logfile: str | None = None,
) -> None:
    """Run beat in the foreground until SIGTERM or Ctrl-C (which release the lock).

    ``max_interval`` is the longest time between two looks at the schedules: a new or resumed
    schedule is seen within it, and the lock expires ``5 * max_interval`` after a beat dies.
    """
    app = beat_app(settings, max_interval)
    scheduler = functools.partial(NotebookScheduler, settings=settings)
    app.Beat(scheduler=scheduler, max_interval=max_interval, loglevel=loglevel, logfile=logfile, quiet=True).run()
