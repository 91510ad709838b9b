"""Running one job on a worker, whatever it runs: load its inputs, execute, store its results, report.

One code path for every kind of job (a ``%%celery`` cell, a function call, a chunk of a map): a
:class:`Work` says how to load, run and collect its own kind; :func:`run_job` does the rest the
same way for all of them: the ``started`` event, output and progress relayed as events
(:func:`~jupyter_celery.worker.capture.job_io`), cancellation points, the time limits, the error
that becomes a ``failed`` event with a traceback from the user's own code down, and the terminal
event written last, after the results are stored (DESIGN §3), in the same transaction that
records the store keys of the results as the job's objects (what keeps them from
``jupyter-celery gc``). A failure of the store is a job failure with ``reason="store"``.
"""

from __future__ import annotations

import os
import threading
import traceback
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from jupyter_celery.core.codec import Codec, Encoded
from jupyter_celery.core.errors import CancelRequested, DecodingError, EncodingError, JupyterCeleryError, StoreError
from jupyter_celery.core.messages import JobSpec
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import Event, EventKind
from jupyter_celery.worker.batching import EventBatcher
from jupyter_celery.worker.capture import JobReporter, job_io
from jupyter_celery.worker.context import WorkerContext

# The key under which a cell's final expression, or a function's return value, travels in the manifest.
VALUE = "value"
# The package's own files, as frames name them (the path it was imported by, and the real one).
_PACKAGE = tuple({str(Path(os.path.abspath(__file__)).parent.parent), str(Path(__file__).resolve().parent.parent)})


def user_traceback(exc: BaseException) -> str:
    """The traceback from the first frame of the user's code down (the worker's own frames cut off)."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_PACKAGE):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb if tb is not None else exc.__traceback__))


def failed(error_type: str, message: str, tb: str = "", reason: str = "error") -> Event:
    return Event(EventKind.FAILED, {"error_type": error_type, "message": message, "traceback": tb, "reason": reason})


def failure_reason(exc: JupyterCeleryError, otherwise: str) -> str:
    """``store`` when the store is at fault, else ``otherwise``."""
    return "store" if isinstance(exc, StoreError) or isinstance(exc.__cause__, StoreError) else otherwise


def timeout_message(spec: JobSpec) -> str:
    limit = f" of {spec.timeout:g}s" if spec.timeout else ""
    return f"the job ran over its time limit{limit} and was stopped"


class Work(ABC):
    """What one job runs. :func:`run_job` calls :meth:`load`, :meth:`run` and :meth:`collect` in turn."""

    # Whether to look for a cancel request before starting (one Redis read: worth it for a map's
    # chunks, which a cancelled map must not start, not on the critical path of every short job).
    check_cancel_first = False

    def __init__(self, spec: JobSpec, attempt: int = 1) -> None:
        self.spec = spec
        self.attempt = attempt
        self.cancel: threading.Event = threading.Event()
        self.batcher: EventBatcher | None = None
        self.retry_in = 0.0  # seconds before the next attempt, when the work asks to be retried

    @property
    def tag(self) -> ObjectTag:
        """How this job's results are tagged in the store."""
        return ObjectTag(self.spec.owner, self.spec.id, "output")

    @abstractmethod
    def load(self, codec: Codec) -> None:
        """Decode the inputs (a :class:`JupyterCeleryError` fails the job with reason ``input``)."""

    @abstractmethod
    def run(self, reporter: JobReporter) -> None:
        """Run the user's code, with its output and progress relayed to the job's stream."""

    @abstractmethod
    def collect(self, codec: Codec) -> dict[str, Any]:
        """Encode the results (large ones to the store); the manifest of the ``succeeded`` event."""

    def failure(self, exc: BaseException) -> Event:
        """The event for an exception the user's code raised: ``failed`` (a function may retry)."""
        return failed(type(exc).__qualname__, str(exc), user_traceback(exc))

    def input_failure(self) -> JupyterCeleryError | None:
        """An input that could not be loaded when the code first used it (lazily loaded inputs)."""
        return None

    @staticmethod
    def results(manifest: dict[str, Any]) -> list[Encoded]:
        """The encoded values of a manifest (their store keys are recorded as the job's objects)."""
        return [*manifest.get("outputs", {}).values(), manifest.get(VALUE, {})]


def run_job(work: Work, ctx: WorkerContext, worker: str, cancel: threading.Event) -> Event:
    """Execute a job, reporting every outcome on its stream; return the last event written.

    That is the terminal event, or a ``retrying`` event when a function asked to be tried again.
    It is written last: after every output event, and after the results are stored. ``cancel`` is
    set (by the process's cancel watcher) once someone asked the job to stop.
    """
    spec = work.spec
    batcher = EventBatcher(ctx.events, spec.id, work.attempt)
    work.batcher, work.cancel = batcher, cancel
    started = {"worker": worker, "pid": os.getpid(), "attempt": work.attempt}
    batcher.add(Event(EventKind.STARTED, started), lazy=True)
    try:
        last = _execute(work, ctx, batcher, cancel)
    except BaseException:
        batcher.close()
        raise
    manifest: dict[str, Any] = last.fields.get("result") or {}
    objects = [key for encoded in work.results(manifest) for key in Codec.keys_of(encoded)]
    batcher.close(last, objects=objects)
    return last


def summary(spec: JobSpec, terminal: Event) -> dict[str, Any]:
    """What Celery's result backend keeps of a succeeded job (the manifest stays on the stream)."""
    manifest: dict[str, Any] = terminal.fields["result"]
    return {"job": spec.id, "outputs": sorted(manifest.get("outputs", {})), "has_value": VALUE in manifest}


def _execute(  # noqa: PLR0911 - one outcome per way a job can end
    work: Work, ctx: WorkerContext, batcher: EventBatcher, cancel: threading.Event
) -> Event:
    try:
        work.load(ctx.codec)
    except JupyterCeleryError as exc:
        return failed(type(exc).__name__, str(exc), reason=failure_reason(exc, "input"))
    try:
        with job_io(batcher, cancel) as reporter:
            work.run(reporter)
    except CancelRequested:
        return Event(EventKind.CANCELLED, {"reason": "cancelled on request; the job stopped at a cancellation point"})
    except SoftTimeLimitExceeded:
        return failed("JobTimeout", timeout_message(work.spec), reason="timeout")
    except BaseException as exc:  # the user's code may raise anything, SystemExit included
        if isinstance(exc, SystemExit) and cancel.is_set():
            # Celery terminated the process after the cancel grace period: let it exit; the
            # worker's main process reports the job cancelled (task_revoked).
            raise
        missing = work.input_failure()
        if missing is not None and exc is missing:  # an input could not be loaded at its first use
            return failed(type(missing).__name__, str(missing), reason=failure_reason(missing, "input"))
        return work.failure(exc)
    missing = work.input_failure()
    if missing is not None:  # the code caught it, but the job did not get its input
        return failed(type(missing).__name__, str(missing), reason=failure_reason(missing, "input"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _collect(work, ctx.codec)
        finally:
            for warning in caught:  # e.g. a frame that travels pickled: the notebook shows it
                batcher.add_text(EventKind.STDERR, f"{warning.category.__name__}: {warning.message}\n")


def _collect(work: Work, codec: Codec) -> Event:
    """The terminal event of code that ran: its results stored, or why they could not be."""
    try:
        manifest = work.collect(codec)
    except (EncodingError, DecodingError) as exc:
        return failed(type(exc).__name__, str(exc), reason=failure_reason(exc, "output"))
    except JupyterCeleryError as exc:
        return failed(type(exc).__name__, str(exc), reason="store")
    return Event(EventKind.SUCCEEDED, {"result": manifest})
