"""The layering rules hold at run time too: the worker side loads no Jupyter code."""

from __future__ import annotations

import subprocess
import sys


def test_worker_side_imports_no_jupyter_code(running_stack):
    code = (
        "import sys, jupyter_celery.worker.app, jupyter_celery.cli.main, jupyter_celery\n"
        "import jupyter_celery.worker.notebook_runner, jupyter_celery.scheduling.beat\n"
        "from jupyter_celery.worker.execution import run_job\nimport jupyter_celery.worker.functions\n"
        "loaded = [m for m in ('IPython', 'ipykernel', 'ipywidgets', 'jupyter_server') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_import_linter_contracts_hold():
    result = subprocess.run(["lint-imports"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
