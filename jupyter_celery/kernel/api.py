"""The notebook-facing functions around jobs: attach, wait_all, jobs, cancel.

They are exported from the package root (``import jupyter_celery as jc; jc.attach(job_id)``).
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jupyter_celery.kernel.client import get_client
from jupyter_celery.kernel.job import Job
from jupyter_celery.kernel.views import view_of


def attach(job_id: str) -> Job:
    """A live handle on any job of yours, e.g. after a kernel restart: its whole history is
    replayed into a new widget, then followed live. Its outputs come with ``job.result()`` /
    ``job.bind()`` once it has succeeded.

    >>> job = jc.attach("3f2a9c...")   # doctest: +SKIP
    """
    return get_client().attach(job_id)


def cancel(job_id: str) -> bool:
    """Ask a job (any of yours, by id) to stop; False if it had already ended."""
    return attach(job_id).cancel()


def wait_all(timeout: float | None = None) -> list[Job]:
    """Block until every job and map this kernel submitted or attached has ended; return the jobs.

    Notebooks that submit with ``--async`` (or ``jc.submit`` / ``jc.map`` without waiting for the
    results) end with ``wait_all()`` so that headless runs (nbclient, papermill, nbval) keep the
    jobs' final state.
    """
    client = get_client()
    deadline = None if timeout is None else time.monotonic() + timeout
    for mapping in list(client.maps.values()):  # first: a map sends its chunks while it runs
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not mapping.wait(remaining):
            raise TimeoutError(f"map {mapping.name!r} did not end within {timeout}s")
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    return wait_for(list(client.jobs.values()), remaining)


def wait_for(jobs: list[Job], timeout: float | None = None) -> list[Job]:
    """Block until each of ``jobs`` has ended (their widgets then show the final state)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for job in jobs:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not job.wait(remaining):
            raise TimeoutError(f"job {job.id} did not end within {timeout}s")
    for job in jobs:  # render the final state now, while the cell still runs
        view = job.view
        if view is not None:
            view.finish()
    return jobs


COLUMNS = ("id", "name", "queue", "state", "worker", "submitted", "duration")


def _when(ts: str) -> str:
    try:
        return datetime.fromtimestamp(float(ts)).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError):
        return ""


def _duration(record: dict[str, str]) -> str:
    try:
        start = float(record.get("started") or record["submitted"])
        end = float(record["ended"]) if record.get("ended") else time.time()
    except (KeyError, ValueError):
        return ""
    return f"{end - start:.1f}s"


@dataclass(frozen=True)
class JobTable:
    """Recent jobs of one owner, shown as a table (HTML in notebooks)."""

    rows: list[dict[str, str]]

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        widths = {c: max([len(c)] + [len(r.get(c, "")) for r in self.rows]) for c in COLUMNS}
        lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
        lines += ["  ".join(r.get(c, "").ljust(widths[c]) for c in COLUMNS) for r in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{c}</th>" for c in COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(r.get(c, ''))}</td>" for c in COLUMNS) + "</tr>" for r in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def jobs(limit: int = 20) -> JobTable:
    """Your most recent jobs (from any kernel), newest first: id, name, queue, state, worker,
    submitted, duration."""
    client = get_client()
    ids = client.events.owner_jobs(client.settings.owner, limit)
    rows = []
    for job_id, record in zip(ids, client.events.records(ids), strict=True):
        if not record:
            continue
        rows.append(
            {
                "id": job_id,
                "name": record.get("name", ""),
                "queue": record.get("queue", ""),
                "state": record.get("state", ""),
                "worker": record.get("worker", ""),
                "submitted": _when(record.get("submitted", "")),
                "duration": _duration(record),
            }
        )
    return JobTable(rows)


def widget(job: Job) -> Any:
    """The job's ipywidgets view (None where widgets cannot show)."""
    view = view_of(job)
    return None if view is None else view.widget
