"""``python -m jupyter_celery`` is the ``jupyter-celery`` command."""

import sys

from jupyter_celery.cli.main import main

sys.exit(main())
