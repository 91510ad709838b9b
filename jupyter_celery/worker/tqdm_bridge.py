"""tqdm progress bars inside a job become job progress, without changes to the job's code.

tqdm documents ``display()`` as the method to override to send a bar to another front-end; in a
worker process we wrap it once: inside a job it reports ``progress(n, total, desc)`` (which is
also a cancellation point) instead of drawing, and a bar made inside a job writes to nowhere
(not to the job's stderr). Outside a job tqdm behaves as usual.
"""

from __future__ import annotations

import importlib.util
import io
from typing import Any

from jupyter_celery.core import runtime

_installed = False


def install_tqdm_bridge() -> bool:
    """Wrap ``tqdm.std.tqdm.display`` if tqdm is installed; returns whether it is now wrapped."""
    global _installed  # noqa: PLW0603 - patched once per process
    if _installed:
        return True
    if importlib.util.find_spec("tqdm") is None:
        return False
    import tqdm.std

    original_display = tqdm.std.tqdm.display
    original_init = tqdm.std.tqdm.__init__

    def display(self: Any, msg: str | None = None, pos: int | None = None) -> Any:
        if runtime._reporter is None:
            return original_display(self, msg, pos)
        runtime.progress(self.n, self.total, self.desc or "")
        return True

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if runtime._reporter is not None and kwargs.get("file") is None and len(args) < 4:
            kwargs["file"] = io.StringIO()  # the bar is the job's progress, not text on stderr
        original_init(self, *args, **kwargs)

    tqdm.std.tqdm.display = display
    tqdm.std.tqdm.__init__ = __init__
    _installed = True
    return True
