"""jupyter-celery: run heavy notebook work on Celery workers.

In a notebook::

    %load_ext jupyter_celery

    %%celery -q python_q
    total = sum(range(n))

    from jupyter_celery import put, get, datasets
    ref = put(frame, name="sales-2026")    # a named dataset in the object store

This module imports nothing from Jupyter at import time (``put``, ``get``, ``datasets`` and
``delete_dataset`` are loaded on first use), so code running on a worker can use it too.
"""

from __future__ import annotations

import importlib
from typing import Any

from jupyter_celery._version import __version__

__all__ = [
    "__version__",
    "datasets",
    "delete_dataset",
    "get",
    "load_ipython_extension",
    "put",
    "unload_ipython_extension",
]
_LAZY = {"put", "get", "datasets", "delete_dataset", "DatasetRef", "DatasetList"}


def __getattr__(name: str) -> Any:
    """``put``, ``get``, ``datasets``...: imported on first use (they bring pandas and the store client)."""
    if name in _LAZY:
        return getattr(importlib.import_module("jupyter_celery.kernel.datasets"), name)
    raise AttributeError(f"module 'jupyter_celery' has no attribute {name!r}")


def load_ipython_extension(ipython: Any) -> None:
    """Called by ``%load_ext jupyter_celery``."""
    from jupyter_celery.kernel.extension import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from jupyter_celery.kernel.extension import unload_ipython_extension as unload

    unload(ipython)
