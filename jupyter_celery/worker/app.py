"""The worker entry point: ``celery -A jupyter_celery.worker.app worker ...``.

Builds the settings once from the environment (or the connection file of ``jupyter-celery up``)
and registers the tasks. Importing this module loads no Jupyter code.
"""

from __future__ import annotations

from jupyter_celery.core.app import make_app
from jupyter_celery.core.settings import Settings
from jupyter_celery.worker.context import configure
from jupyter_celery.worker.tasks import register

settings = Settings.from_env()
configure(settings)
app = make_app(settings)
register(app)
