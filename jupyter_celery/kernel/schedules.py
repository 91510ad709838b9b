"""Scheduled notebooks from a notebook: ``jc.schedule_notebook``, ``jc.schedules`` and the
:class:`Schedule` handle. The schedule itself lives in the registry (shared layer); a run started
from here is a job like any other (:class:`Job`).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from jupyter_celery.core.protocol import DEFAULT_QUEUE, OVERLAP_SKIP
from jupyter_celery.kernel.client import get_client
from jupyter_celery.kernel.job import Job
from jupyter_celery.scheduling.model import DEFAULT_RETRY_DELAY, ScheduleSpec
from jupyter_celery.scheduling.registry import Registry
from jupyter_celery.scheduling.runs import RunRecord
from jupyter_celery.scheduling.tables import (
    RUN_COLUMNS,
    SCHEDULE_COLUMNS,
    describe,
    html_table,
    run_row,
    schedule_row,
    text_table,
)

_registry: Registry | None = None
_lock = threading.Lock()


def get_registry() -> Registry:
    """The kernel's schedule registry, with the settings of the kernel's client."""
    global _registry  # noqa: PLW0603 - one registry per kernel process, like the client
    with _lock:
        if _registry is None:
            _registry = Registry(get_client().settings)
        return _registry


class RunList(list[RunRecord]):
    """A schedule's runs, newest first; shown as a table."""

    def __repr__(self) -> str:
        return text_table(RUN_COLUMNS, [run_row(r) for r in self])

    def _repr_html_(self) -> str:
        return html_table(RUN_COLUMNS, [run_row(r) for r in self])


class Schedule:
    """A scheduled notebook. Get one from :func:`schedule_notebook` or :func:`schedules`.

    >>> s = jc.schedule_notebook("reports/daily.ipynb", every="15m")  # doctest: +SKIP
    >>> job = s.run_now()            # a Job, like any submitted job     # doctest: +SKIP
    >>> s.runs()[0].state            # the newest run first              # doctest: +SKIP
    'succeeded'
    """

    def __init__(self, spec: ScheduleSpec, registry: Registry | None = None) -> None:
        self.spec = spec
        self._registry = registry or get_registry()

    @property
    def name(self) -> str:
        return self.spec.name

    def refresh(self) -> Schedule:
        """Read the schedule again from the registry."""
        self.spec = self._registry.get(self.spec.name, self.spec.owner)
        return self

    def run_now(self) -> Job:
        """Start a run at once (paused or not); returns its :class:`Job`."""
        ticket = self._registry.run_now(self.spec.name, self.spec.owner)
        return get_client().attach(ticket.run_id)  # followed live by the kernel's reader

    def runs(self, limit: int = 20) -> RunList:
        """The run history, newest first: state, times, duration, output keys, failing cell, error."""
        return RunList(self._registry.history(self.spec.name, self.spec.owner, limit))

    def pause(self) -> Schedule:
        """Stop queueing runs (``run_now`` still works)."""
        self.spec = self._registry.pause(self.spec.name, self.spec.owner)
        return self

    def resume(self) -> Schedule:
        """Queue runs again from the next due time."""
        self.spec = self._registry.resume(self.spec.name, self.spec.owner)
        return self

    def update(self, **changes: Any) -> Schedule:
        """Change the schedule: ``cron=``, ``every=``, ``parameters=``, ``timeout=``... ``notebook=`` uploads it again.

        >>> s.update(cron="0 7 * * *", timezone="Europe/Paris")  # doctest: +SKIP
        """
        self.spec = self._registry.update(self.spec.name, owner=self.spec.owner, **changes)
        return self

    def delete(self) -> None:
        """Remove the schedule and its run history (stored outputs stay in the store)."""
        self._registry.delete(self.spec.name, self.spec.owner)

    def next_runs(self, count: int = 3) -> list[datetime]:
        """The next times a run will be queued (none while paused)."""
        return self._registry.next_runs(self.spec, count)

    def output(self, run: RunRecord | None = None, kind: str = "notebook") -> Any:
        """A run's executed notebook (as a dict) or, with ``kind="html"``, its HTML page (str).

        Without ``run``, the newest run that stored outputs.
        """
        if run is None:
            run = next((r for r in self.runs() if r.output_notebook), None)
            if run is None:
                raise LookupError(f"no run of {self.spec.name!r} has stored outputs yet")
        data = self._registry.output(run, "html" if kind == "html" else "notebook")
        return data.decode() if kind == "html" else json.loads(data)

    def __repr__(self) -> str:
        lines = [f"{label:<11} {value}" for label, value in describe(self.spec, self.next_runs())]
        return f"<Schedule {self.spec.name}>\n" + "\n".join(lines)

    def _repr_html_(self) -> str:
        rows = [[label, value] for label, value in describe(self.spec, self.next_runs())]
        return html_table(("schedule", self.spec.name), rows)


class ScheduleList(list[Schedule]):
    """The owner's schedules; shown as a table."""

    def _rows(self) -> list[list[str]]:
        return [schedule_row(s.spec, s.next_runs(1)) for s in self]

    def __repr__(self) -> str:
        return text_table(SCHEDULE_COLUMNS, self._rows())

    def _repr_html_(self) -> str:
        return html_table(SCHEDULE_COLUMNS, self._rows())


def schedule_notebook(
    notebook: str | Path, *, cron: str | None = None, every: str | float | None = None, timezone: str = "UTC",
    parameters: dict[str, Any] | None = None, queue: str = DEFAULT_QUEUE, name: str | None = None,
    timeout: float | None = None, retries: int = 0, retry_delay: float = DEFAULT_RETRY_DELAY,
    overlap: str = OVERLAP_SKIP, kernel: str = "python3", paused: bool = False, replace: bool = False,
) -> Schedule:  # fmt: skip
    """Run ``notebook`` on a worker on a cron expression or an interval, with papermill parameters.

    The notebook is uploaded to the object store now (workers never read your files); beat
    queues the runs, whether this kernel or Jupyter is running or not. A bad ``cron``, interval,
    ``timezone`` or a parameter that the notebook's ``parameters`` cell does not declare is an
    error, and nothing is saved. ``timeout`` bounds each run (seconds); a failed run is tried
    again ``retries`` times, ``retry_delay`` seconds apart; a run that finds the previous one
    still running is skipped (``overlap="allow"`` runs both). ``replace=True`` redefines a
    schedule of the same name, keeping its history.

    Examples::

        s = jc.schedule_notebook("reports/daily.ipynb", cron="0 6 * * 1-5", timezone="Europe/Paris",
                                 parameters={"region": "emea", "days": 7}, name="daily-emea",
                                 timeout=1800, retries=1)
        s.run_now()                     # a Job: follow it, wait for it, cancel it
        s.runs()                        # the history as a table
        s.pause(); s.resume(); s.update(cron="0 7 * * *"); s.delete()
        jc.schedule_notebook("reports/daily.ipynb", every="15m", name="quarter-hourly")
    """
    spec = get_registry().create(
        notebook, name=name, replace=replace, cron=cron, every=every, timezone=timezone, parameters=parameters or {},
        queue=queue, timeout=timeout, retries=retries, retry_delay=retry_delay, overlap=overlap, kernel=kernel,
        paused=paused,
    )  # fmt: skip
    return Schedule(spec)


def schedules() -> ScheduleList:
    """All your schedules (by name), shown as a table with their next run.

    >>> jc.schedules()  # doctest: +SKIP
    """
    registry = get_registry()
    return ScheduleList(Schedule(spec, registry) for spec in registry.all())


def reset_registry() -> None:
    """Forget the registry (the next use re-reads the settings)."""
    global _registry  # noqa: PLW0603
    with _lock:
        if _registry is not None:
            _registry.close()
        _registry = None
