"""A temporary embedded stack for a benchmark: `jupyter-celery up` in a temp dir, `down` at the end.

Settings from the environment are cleared first, so the benchmark measures this stack only.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jupyter_celery.cli.stack import down, up


@contextmanager
def embedded_stack() -> Iterator[Path]:
    """Start the stack (redis-server, a worker per queue, beat, a local store); yield its state dir."""
    state = Path(tempfile.mkdtemp(prefix="jc-bench-"))
    for name in [k for k in os.environ if k.startswith("JUPYTER_CELERY_")]:
        del os.environ[name]
    os.environ["JUPYTER_CELERY_STATE_DIR"] = str(state)
    if up(state, detach=True, echo=lambda _line: None) != 0:
        raise SystemExit("could not start the stack")
    try:
        yield state
    finally:
        down(state, echo=lambda _line: None)
