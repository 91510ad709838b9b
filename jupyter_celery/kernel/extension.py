"""``%load_ext jupyter_celery``: registers the magics and puts ``progress`` in the namespace."""

from __future__ import annotations

from typing import Any

from jupyter_celery.core.runtime import progress
from jupyter_celery.kernel.client import reset_client
from jupyter_celery.kernel.magics import CeleryMagics
from jupyter_celery.kernel.schedule_magics import ScheduleMagics
from jupyter_celery.kernel.schedules import reset_registry


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(CeleryMagics)
    ipython.register_magics(ScheduleMagics)
    # so a cell that calls progress() runs unchanged here and on a worker
    ipython.user_ns.setdefault("progress", progress)


def unload_ipython_extension(ipython: Any) -> None:
    reset_registry()
    reset_client()
