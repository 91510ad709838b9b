"""``%load_ext jupyter_celery``: registers the magics in the running IPython."""

from __future__ import annotations

from typing import Any

from jupyter_celery.kernel.client import reset_client
from jupyter_celery.kernel.magics import CeleryMagics


def load_ipython_extension(ipython: Any) -> None:
    ipython.register_magics(CeleryMagics)


def unload_ipython_extension(ipython: Any) -> None:
    reset_client()
