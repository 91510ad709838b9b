"""What code running inside a job can call: :func:`progress` and :func:`display`.

Both are importable anywhere (``from jupyter_celery import progress``); outside a job they do
nothing. The worker installs a :class:`Reporter` for the job it runs, which turns the calls into
events on the job's stream and raises :class:`~jupyter_celery.core.errors.CancelRequested` once the
job was asked to stop.
"""

from __future__ import annotations

import math
from typing import Any, Protocol


class Reporter(Protocol):
    """The worker side's hooks for the job running in this process."""

    def progress(self, done: float, total: float | None, message: str) -> None: ...

    def display(self, data: dict[str, str]) -> None: ...


_reporter: Reporter | None = None


def install(reporter: Reporter | None) -> None:
    """Set (or, with None, clear) the reporter of the job running in this process."""
    global _reporter  # noqa: PLW0603 - one running job per worker process
    _reporter = reporter


def progress(done: float, total: float | None = None, message: str = "") -> None:
    """Report how far the current job has got; shown live in the notebook's job widget.

    ``total`` None means the amount of work is unknown (the bar is indeterminate). Calling it is
    cheap: calls are merged into a few events a second. It is also where a job that was asked to
    stop gets :class:`~jupyter_celery.core.errors.CancelRequested`. Outside a job it does nothing.

    >>> from jupyter_celery import progress
    >>> for i in range(3):
    ...     progress(i + 1, 3, f"step {i + 1}")
    """
    reporter = _reporter
    if reporter is None:
        return
    done = float(done)
    if total is not None:
        total = float(total)
        if not math.isfinite(total) or total <= 0:
            total = None
    reporter.progress(done, total, str(message))


def mime_bundle(obj: Any) -> dict[str, str]:
    """The text and HTML representations of ``obj`` (what a notebook would show)."""
    bundle = {"text/plain": repr(obj)}
    html = getattr(obj, "_repr_html_", None)
    if callable(html):
        try:
            rendered = html()
        except Exception:  # a broken _repr_html_ must not break the job
            rendered = None
        if isinstance(rendered, str):
            bundle["text/html"] = rendered
    return bundle


def display(*objs: Any) -> None:
    """Show objects (their HTML when they have one) in the job's widget, like IPython's display().

    Outside a job it prints them.
    """
    reporter = _reporter
    for obj in objs:
        if reporter is None:
            print(repr(obj))
        else:
            reporter.display(mime_bundle(obj))
