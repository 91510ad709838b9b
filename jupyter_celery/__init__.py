"""jupyter-celery: run heavy notebook work on Celery workers.

In a notebook::

    %load_ext jupyter_celery

    %%celery -q python_q
    total = sum(range(n))

This module imports nothing from Jupyter at import time, so code running on a worker can use
it too.
"""

from __future__ import annotations

from typing import Any

from jupyter_celery._version import __version__

__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension"]


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext jupyter_celery``."""
    from jupyter_celery.kernel.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from jupyter_celery.kernel.extension import unload_ipython_extension as unload

    unload(ipython)
