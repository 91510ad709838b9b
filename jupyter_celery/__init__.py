"""jupyter-celery: run heavy notebook work on Celery workers.

In a notebook::

    %load_ext jupyter_celery

    %%celery -q python_q
    total = sum(range(n))

Inside a job, ``from jupyter_celery import progress`` reports progress to the notebook.

Functions::

    import jupyter_celery as jc
    job = jc.submit(score, frame, 0.5, queue="circuit_q", timeout=600, retries=2)
    job.result()
    squares = jc.map(lambda x: x * x, range(10_000))
    squares.result()

Named datasets in the object store::

    from jupyter_celery import put, get, datasets
    ref = put(frame, name="sales-2026")

Scheduled notebooks::

    import jupyter_celery as jc
    s = jc.schedule_notebook("reports/daily.ipynb", cron="0 6 * * 1-5", parameters={"region": "emea"})
    jc.schedules()

This module imports nothing from Jupyter at import time (the notebook-side functions load on
first use), so code running on a worker can import it too.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from jupyter_celery._version import __version__
from jupyter_celery.core.runtime import display, progress

# Notebook-side names, imported on first use: name -> module.
_LAZY = {
    "attach": "jupyter_celery.kernel.api",
    "cancel": "jupyter_celery.kernel.api",
    "jobs": "jupyter_celery.kernel.api",
    "wait_all": "jupyter_celery.kernel.api",
    "Job": "jupyter_celery.kernel.job",
    "submit": "jupyter_celery.kernel.functions",
    "map": "jupyter_celery.kernel.functions",
    "remote": "jupyter_celery.kernel.functions",
    "as_completed": "jupyter_celery.kernel.futures",
    "wait": "jupyter_celery.kernel.futures",
    "gather": "jupyter_celery.kernel.futures",
    "FIRST_COMPLETED": "jupyter_celery.kernel.futures",
    "FIRST_EXCEPTION": "jupyter_celery.kernel.futures",
    "ALL_COMPLETED": "jupyter_celery.kernel.futures",
    "schedule_notebook": "jupyter_celery.kernel.schedules",
    "schedules": "jupyter_celery.kernel.schedules",
    "put": "jupyter_celery.kernel.datasets",
    "get": "jupyter_celery.kernel.datasets",
    "datasets": "jupyter_celery.kernel.datasets",
    "delete_dataset": "jupyter_celery.kernel.datasets",
    "DatasetRef": "jupyter_celery.kernel.datasets",
    "DatasetList": "jupyter_celery.kernel.datasets",
}

__all__ = [  # noqa: RUF022 - the notebook-side names after the core ones
    "__version__",
    "display",
    "load_ipython_extension",
    "progress",
    "unload_ipython_extension",
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "FIRST_EXCEPTION",
    "Job",
    "as_completed",
    "attach",
    "cancel",
    "datasets",
    "delete_dataset",
    "gather",
    "get",
    "jobs",
    "map",
    "put",
    "remote",
    "schedule_notebook",
    "schedules",
    "submit",
    "wait",
    "wait_all",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jupyter_celery' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext jupyter_celery``."""
    import_module("jupyter_celery.kernel.extension").load_ipython_extension(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    import_module("jupyter_celery.kernel.extension").unload_ipython_extension(ipython)
