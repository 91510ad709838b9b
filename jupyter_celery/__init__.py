"""jupyter-celery: run heavy notebook work on Celery workers.

In a notebook::

    %load_ext jupyter_celery

    %%celery -q python_q
    total = sum(range(n))

Scheduled notebooks::

    import jupyter_celery as jc
    s = jc.schedule_notebook("reports/daily.ipynb", cron="0 6 * * 1-5", parameters={"region": "emea"})
    jc.schedules()

This module imports nothing from Jupyter at import time, so code running on a worker can use
it too: ``schedule_notebook`` and ``schedules`` are loaded on first use.
"""

from __future__ import annotations

from typing import Any

from jupyter_celery._version import __version__

__all__ = ["__version__", "load_ipython_extension", "schedule_notebook", "schedules", "unload_ipython_extension"]

# Public names loaded on first use (module-level __getattr__), so importing the package stays light.
_LAZY = {
    "schedule_notebook": "jupyter_celery.kernel.schedules",
    "schedules": "jupyter_celery.kernel.schedules",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'jupyter_celery' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext jupyter_celery``."""
    from jupyter_celery.kernel.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from jupyter_celery.kernel.extension import unload_ipython_extension as unload

    unload(ipython)
