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


def test_the_worker_extra_installs_no_jupyter_front_end():
    """`pip install jupyter-celery[worker]` brings no IPython, ipywidgets or jupyter-server."""
    import re
    from importlib.metadata import requires

    forbidden = {"ipython", "ipykernel", "ipywidgets", "jupyter-server", "jupyter_server", "jupyterlab"}

    def names(extra: str) -> set[str]:
        found = set()
        for requirement in requires("jupyter-celery") or []:
            if f'extra == "{extra}"' not in requirement.replace("'", '"'):
                continue
            name = re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()
            if name == "jupyter-celery":  # another extra of ours
                inner = re.search(r"\[(.*?)\]", requirement)
                for other in inner.group(1).split(",") if inner else []:
                    found |= names(other.strip())
            else:
                found.add(name)
        return found

    base = {
        re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0].lower()
        for r in requires("jupyter-celery") or []
        if "extra" not in r
    }
    assert not (names("worker") | base) & forbidden
    assert "ipykernel" in names("notebooks")  # the extra that runs scheduled notebooks does need a kernel
