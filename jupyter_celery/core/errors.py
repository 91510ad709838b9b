"""The one error hierarchy of the project.

Every error a user can see derives from :class:`JupyterCeleryError`, so a notebook can catch
them all with one ``except``.
"""

from __future__ import annotations

from typing import Any


class JupyterCeleryError(Exception):
    """Base class of every jupyter-celery error.

    In IPython these errors show as one clear line, without the frames of jupyter-celery itself
    (``_render_traceback_``): they describe the user's situation, not a bug.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {self}"]


class ConfigurationError(JupyterCeleryError):
    """The settings are missing or invalid (no broker URL, malformed URL, bad limit...)."""


class ConnectionFailed(JupyterCeleryError):
    """A service (Redis, the object store) could not be reached. The URL in the message is redacted."""


class ProtocolError(JupyterCeleryError):
    """A message or event does not follow the wire contract (wrong version, unknown fields)."""


class StoreError(JupyterCeleryError):
    """The object store failed. The message names the store (credentials redacted) and the key."""


class ObjectMissing(StoreError):
    """An object the job refers to is not in the store (never written, or expired)."""


class StoreUnreachable(StoreError, ConnectionFailed):
    """The object store could not be reached (connection refused, timeouts) after retries."""


class StoreAccessDenied(StoreError):
    """The store refused access: wrong credentials, or a bucket that is missing and may not be created."""


class StoreFull(StoreError):
    """No space left where an object is written or staged (the store's disk, or the local temp directory)."""


class DatasetError(JupyterCeleryError):
    """A named dataset cannot be stored: an invalid name, or a value Parquet cannot hold exactly."""


class DatasetMissing(ObjectMissing):
    """There is no dataset of that name (never stored, or deleted)."""


class EncodingError(JupyterCeleryError):
    """A value cannot be encoded for the trip to or from a worker.

    ``name`` is the variable the value belongs to.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"cannot send variable {name!r}: {reason}")
        self.name = name
        self.reason = reason


class DecodingError(JupyterCeleryError):
    """A value that was encoded cannot be decoded on this side (missing module, version skew)."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"cannot load variable {name!r}: {reason}")
        self.name = name
        self.reason = reason


class JupyterCeleryWarning(UserWarning):
    """Base class of the warnings jupyter-celery issues."""


class FramePickledWarning(JupyterCeleryWarning):
    """A DataFrame travels pickled because Arrow cannot hold it exactly (mixed-object columns, duplicate names...).

    The round trip is still exact; the stored object is just not readable by other tools.
    """


class CellSyntaxError(JupyterCeleryError):
    """The cell does not compile; nothing was submitted.

    ``lineno`` is the line in the cell (counting the ``%%celery`` line); ``syntax_error`` is the
    compiler's error with that line number, shown in IPython as a normal syntax error is.
    """

    def __init__(self, syntax_error: SyntaxError) -> None:
        super().__init__(f"{syntax_error.msg} ({syntax_error.filename}, line {syntax_error.lineno})")
        self.syntax_error = syntax_error
        self.lineno = syntax_error.lineno

    def _render_traceback_(self) -> list[str]:
        import traceback

        lines = traceback.format_exception_only(SyntaxError, self.syntax_error)
        return "".join(lines).rstrip("\n").splitlines()


class JobFailed(JupyterCeleryError):
    """A job ended without success. Subclasses say how."""

    def __init__(self, job_id: str, message: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class RemoteError(JobFailed):
    """The job's code raised on the worker.

    ``ename`` and ``evalue`` are the original exception type and message; ``traceback`` is the
    remote traceback, whose line numbers refer to the user's cell. In IPython the remote
    traceback is what is shown (``_render_traceback_``), not the kernel-side frames.
    """

    def __init__(self, job_id: str, ename: str, evalue: str, traceback: str, worker: str = "") -> None:
        super().__init__(job_id, f"{ename}: {evalue}" if evalue else ename)
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback
        self.worker = worker

    def _render_traceback_(self) -> list[str]:
        where = f" on {self.worker}" if self.worker else ""
        header = f"RemoteError: job {self.job_id} raised {self.ename}{where}"
        return [header, *self.traceback.rstrip("\n").splitlines()]


class JobTimeout(JobFailed):
    """The job ran over its time limit and was stopped."""


class JobCancelled(JobFailed):
    """The job was cancelled before it could finish."""


class JobLost(JobFailed):
    """The job's worker disappeared and the job cannot be recovered."""


class MapFailed(JobFailed):
    """Items of a map failed (the others ran). ``errors`` lists them by index, with their tracebacks.

    In IPython the first failed item's remote traceback is shown under a one-line summary.
    """

    def __init__(self, map_id: str, name: str, total: int, errors: list[Any]) -> None:
        first = f"; the first: {errors[0]}" if errors else ""
        super().__init__(map_id, f"{len(errors)} of {total} items of map {name!r} failed{first}")
        self.errors = errors

    def _render_traceback_(self) -> list[str]:
        lines = [f"MapFailed: {self}"]
        tb = getattr(self.errors[0], "traceback", "") if self.errors else ""
        if tb:
            lines += ["", f"{self.errors[0]}, on the worker:", *tb.rstrip("\n").splitlines()]
        lines.append("(map.errors() lists every failed item; map.result(errors='none') returns the others)")
        return lines


class CancelRequested(BaseException):
    """Raised inside a job's code, at a ``progress()`` call or an output line, once the job was
    asked to stop. A ``BaseException`` (like ``KeyboardInterrupt``) so that the job's own
    ``except Exception`` blocks do not swallow it; the worker reports the job ``cancelled``.
    """


class ScheduleError(JupyterCeleryError):
    """A scheduled-notebook operation failed. Subclasses say how."""


class InvalidSchedule(ScheduleError):
    """A schedule definition is invalid (bad cron or interval, unknown parameter, unknown
    timezone...). Nothing was saved."""


class ScheduleNotFound(ScheduleError):
    """No schedule of that name for this owner."""


class ScheduleExists(ScheduleError):
    """A schedule of that name exists already (update it, or pass ``replace=True``)."""
