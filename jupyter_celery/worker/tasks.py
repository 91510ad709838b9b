"""The task implementations, registered under the names of :mod:`jupyter_celery.core.protocol`."""

from __future__ import annotations

import contextlib
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Celery, Task
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_revoked

from jupyter_celery.core.errors import ConnectionFailed, ProtocolError
from jupyter_celery.core.protocol import (
    TASK_ECHO,
    TASK_RUN_CELL,
    TASK_RUN_NOTEBOOK,
    Event,
    EventKind,
    JobSpec,
    NotebookRunSpec,
)
from jupyter_celery.worker.context import context
from jupyter_celery.worker.execution import ReportedFailure, run_cell
from jupyter_celery.worker.notebook_runner import run_log, run_notebook


class JobTask(Task):  # type: ignore[misc]
    """Base of job tasks: ends the job's stream for failures that happen outside the task body.

    Celery calls ``on_failure`` in the worker's main process for a hard time limit (the child
    was killed), and in the child for exceptions of the body, which the body has already
    reported (:class:`ReportedFailure`).
    """

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if isinstance(exc, ReportedFailure):
            return
        if isinstance(exc, TimeLimitExceeded):
            fields = {
                "error_type": "JobTimeout",
                "message": f"the job ran over its hard time limit ({exc}s); its process was replaced",
                "reason": "timeout",
            }
        elif isinstance(exc, WorkerLostError):
            fields = {"error_type": "WorkerLost", "message": str(exc), "reason": "lost"}
        else:
            fields = {"error_type": type(exc).__name__, "message": str(exc), "reason": "error"}
        self.after_failure(task_id, args, fields)  # before the terminal event, which readers act on
        # if Redis is unreachable, the kernel's reader notices the silent job from its Celery state
        with contextlib.suppress(ConnectionFailed):
            context().events.append(task_id, Event(EventKind.FAILED, fields))

    def after_failure(self, task_id: str, args: Any, fields: dict[str, str]) -> None:
        """What a kind of job records besides its stream when it failed outside its body."""


class NotebookTask(JobTask):
    """A run of a scheduled notebook: a failure outside the body also ends the run's record and lock."""

    def after_failure(self, task_id: str, args: Any, fields: dict[str, str]) -> None:
        end_run(task_id, args, "failed", error=f"{fields['error_type']}: {fields['message']}", reason=fields["reason"])


def end_run(run_id: str, args: Any, state: str, **values: Any) -> None:
    """Record how a run ended outside its body, and give its schedule's overlap lock back."""
    message = args[0] if args and isinstance(args[0], dict) else {}
    runs = run_log(context())
    with contextlib.suppress(ConnectionFailed, OSError):
        runs.finish(run_id, state, **values)
        if message.get("owner") and message.get("schedule"):
            runs.release(str(message["owner"]), str(message["schedule"]), run_id)


def on_revoked(sender: Any = None, request: Any = None, terminated: bool = False, **_kw: Any) -> None:
    """A revoked run (cancelled while queued, or terminated while running) ends ``cancelled``.

    Celery calls no failure hook for a revoked task, so without this its stream would never end
    and its schedule's overlap lock would be held until it expires.
    """
    if getattr(sender, "name", None) != TASK_RUN_NOTEBOOK or request is None:
        return
    reason = "cancelled while running" if terminated else "cancelled before it started"
    end_run(request.id, request.args, "cancelled", reason="cancelled", error=reason)
    with contextlib.suppress(ConnectionFailed):  # the terminal event last, once the run is recorded
        context().events.append(request.id, Event(EventKind.CANCELLED, {"reason": reason}))


def _invalid(message: Any, exc: Exception) -> ReportedFailure:
    """End the stream of a job whose message is invalid; the error to raise."""
    job_id = message.get("id") if isinstance(message, dict) else None
    if job_id:
        context().events.append(
            str(job_id),
            Event(EventKind.FAILED, {"error_type": "ProtocolError", "message": str(exc), "reason": "invalid"}),
        )
    return ReportedFailure(str(exc))


def _attempt(task: Task, job_id: str) -> int:
    """This attempt's number; a message re-delivered after its worker was lost says so on the stream."""
    request = task.request
    attempt = int(request.retries or 0) + 1
    if (request.delivery_info or {}).get("redelivered"):
        reason = "re-delivered after its worker was lost"
        context().events.append(job_id, Event(EventKind.RETRYING, {"attempt": attempt, "reason": reason}))
    return attempt


def register(app: Celery) -> None:
    """Register the tasks on ``app``."""
    task_revoked.connect(on_revoked, weak=False)

    # track_started=False: the job stream's `started` event (and the job record) already say the job
    # runs; Celery's STARTED state would be a second write on the critical path of every job
    # (measured: ~0.6 ms of a ~4.5 ms round trip). SUCCESS and FAILURE are still stored.
    @app.task(name=TASK_RUN_CELL, bind=True, base=JobTask, track_started=False)  # type: ignore[untyped-decorator]
    def run_cell_task(self: Task, message: dict[str, Any]) -> dict[str, Any]:
        try:
            spec = JobSpec.from_message(message)
        except (ProtocolError, TypeError) as exc:
            raise _invalid(message, exc) from None
        return run_cell(spec, context(), worker=str(self.request.hostname), attempt=_attempt(self, spec.id))

    @app.task(name=TASK_RUN_NOTEBOOK, bind=True, base=NotebookTask, track_started=False)  # type: ignore[untyped-decorator]
    def run_notebook_task(self: Task, message: dict[str, Any]) -> dict[str, Any]:
        """One attempt of a scheduled notebook run; a failed attempt with retries left queues the next one."""
        try:
            spec = NotebookRunSpec.from_message(message)
        except (ProtocolError, TypeError) as exc:
            raise _invalid(message, exc) from None
        last = run_notebook(spec, context(), worker=str(self.request.hostname), attempt=_attempt(self, spec.id))
        if last.kind is EventKind.RETRYING:
            raise self.retry(countdown=spec.retry_delay, max_retries=spec.retries)
        if last.kind is EventKind.FAILED:
            raise ReportedFailure(f"{last.fields.get('error_type')}: {last.fields.get('message')}")
        return {"run": spec.id, "state": last.kind.value}

    @app.task(name=TASK_ECHO)  # type: ignore[untyped-decorator]
    def echo(value: Any = None) -> Any:
        """Return its argument: the raw-Celery anchor of the benchmarks."""
        return value
