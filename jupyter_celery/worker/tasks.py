"""The task implementations, registered under the names of :mod:`jupyter_celery.core.protocol`,
and the Celery hooks that end a job's stream when it ends outside its task body.

Every way a job can end writes exactly one terminal event (the event log drops any second one):

- in the task body (child process): ``succeeded``, ``failed`` (exception, soft time limit, bad
  input or output), ``cancelled`` (stopped at a cancellation point; a skipped notebook run);
- ``task_failure`` in the main process: the hard time limit killed the child, or the child was
  lost more often than the job may be retried;
- ``on_retry`` in the main process: the child was lost and the job is sent again (``retrying``);
- ``task_revoked`` in the main process: cancelled before it started, or terminated after the
  cancel grace period;
- ``task_rejected`` / ``task_unknown`` in the main process: a message the worker refused before
  running it (not JSON, undecodable), or the name of a task this worker does not have (a worker
  of another version). Celery records nothing for the first: without this hook the job would
  stay ``queued`` for good.

A kind of job that records more than its stream (a scheduled notebook run has a run record and
an overlap lock) does so in ``after_failure`` / ``after_revoked``, before the terminal event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from billiard.exceptions import WorkerLostError
from celery import Celery, Task, signals
from celery.exceptions import Ignore, TimeLimitExceeded

from jupyter_celery.core.errors import ConnectionFailed, ProtocolError
from jupyter_celery.core.messages import JobSpec, NotebookRunSpec
from jupyter_celery.core.protocol import (
    KIND_CHUNK,
    TASK_ECHO,
    TASK_NAMESPACE,
    TASK_RUN_CELL,
    TASK_RUN_FUNCTION,
    TASK_RUN_NOTEBOOK,
    Event,
    EventKind,
)
from jupyter_celery.worker.cancel import CancelWatch, cancel_watch
from jupyter_celery.worker.cell import CellWork
from jupyter_celery.worker.context import context
from jupyter_celery.worker.execution import Work, run_job, summary
from jupyter_celery.worker.functions import ChunkWork, FunctionWork
from jupyter_celery.worker.heartbeat import Heartbeat
from jupyter_celery.worker.notebook_runner import run_log, run_notebook
from jupyter_celery.worker.tqdm_bridge import install_tqdm_bridge

SpecT = TypeVar("SpecT", JobSpec, NotebookRunSpec)
JOB_TASKS = frozenset({TASK_RUN_CELL, TASK_RUN_FUNCTION, TASK_RUN_NOTEBOOK})
# How often a job whose worker process died (killed, out of memory) is sent again.
WORKER_LOST_RETRIES = 2
# The options of every job task. track_started=False: the job stream's `started` event (and the job
# record) already say the job runs; Celery's STARTED state would be a second write on the critical
# path of every job (measured: ~0.6 ms of a ~4.5 ms round trip). SUCCESS and FAILURE are still stored.
JOB_TASK_OPTIONS: dict[str, Any] = {
    "bind": True,
    "track_started": False,
    "retry_on_worker_lost": True,
    "max_retries": WORKER_LOST_RETRIES,
    "default_retry_delay": 0,
}


class ReportedFailure(Exception):
    """Raised after a ``failed`` event was written, so Celery records FAILURE without a second report."""


def _report(job_id: str, event: Event) -> None:
    # If Redis is unreachable, the kernel's reader notices the silent job from its liveness checks.
    with contextlib.suppress(ConnectionFailed):
        context().events.append(job_id, event)


class JobTask(Task):  # type: ignore[misc]
    """Base of job tasks."""

    def on_retry(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """The worker process running the job was lost; Celery sends the job again."""
        if not isinstance(exc, WorkerLostError):
            return  # a retry the task asked for itself reported its own `retrying` event
        attempt = int(self.request.retries or 0) + 2
        reason = f"the worker process was lost ({exc}); running the job again"
        _report(task_id, Event(EventKind.RETRYING, {"attempt": attempt, "reason": reason}))

    def after_failure(self, task_id: str, args: Any, fields: dict[str, str]) -> None:
        """What a kind of job records besides its stream when it failed outside its body."""

    def after_revoked(self, task_id: str, args: Any, reason: str) -> None:
        """What a kind of job records besides its stream when it was revoked."""


class NotebookTask(JobTask):
    """A run of a scheduled notebook: ending outside the body also ends the run's record and lock."""

    def after_failure(self, task_id: str, args: Any, fields: dict[str, str]) -> None:
        end_run(task_id, args, "failed", error=f"{fields['error_type']}: {fields['message']}", reason=fields["reason"])

    def after_revoked(self, task_id: str, args: Any, reason: str) -> None:
        end_run(task_id, args, "cancelled", reason="cancelled", error=reason)


def end_run(run_id: str, args: Any, state: str, **values: Any) -> None:
    """Record how a run ended outside its body, and give its schedule's overlap lock back."""
    message = args[0] if args and isinstance(args[0], dict) else {}
    runs = run_log(context())
    with contextlib.suppress(ConnectionFailed, OSError):
        runs.finish(run_id, state, **values)
        if message.get("owner") and message.get("schedule"):
            runs.release(str(message["owner"]), str(message["schedule"]), run_id)


@signals.task_failure.connect
def _on_task_failure(
    sender: Any = None, task_id: str = "", exception: BaseException | None = None, args: Any = None, **_: Any
) -> None:
    """Failures outside the task body (the body reports its own, as ReportedFailure)."""
    if getattr(sender, "name", None) not in JOB_TASKS or isinstance(exception, ReportedFailure):
        return
    if isinstance(exception, TimeLimitExceeded):
        fields = {
            "error_type": "JobTimeout",
            "message": f"the job ran over its hard time limit ({exception}s); its process was replaced",
            "reason": "timeout",
        }
    elif isinstance(exception, WorkerLostError):
        fields = {
            "error_type": "WorkerLost",
            "message": f"the worker process running the job was lost {WORKER_LOST_RETRIES + 1} times ({exception})",
            "reason": "lost",
        }
    else:
        fields = {"error_type": type(exception).__name__, "message": str(exception), "reason": "error"}
    sender.after_failure(task_id, args, fields)  # before the terminal event, which readers act on
    _report(task_id, Event(EventKind.FAILED, fields))


@signals.task_revoked.connect
def _on_task_revoked(sender: Any = None, request: Any = None, terminated: bool = False, **_: Any) -> None:
    if getattr(sender, "name", None) not in JOB_TASKS or request is None:
        return
    reason = "terminated after the cancel grace period" if terminated else "cancelled before it started"
    sender.after_revoked(request.id, request.args, reason)
    _report(request.id, Event(EventKind.CANCELLED, {"reason": reason}))


def _refused(job_id: Any, message: str, reason: str) -> None:
    fields = {"error_type": "ProtocolError", "message": message, "reason": reason}
    if job_id:
        _report(str(job_id), Event(EventKind.FAILED, fields))


@signals.task_rejected.connect
def _on_task_rejected(message: Any = None, exc: BaseException | None = None, **_: Any) -> None:
    headers = getattr(message, "headers", None) or {}
    if headers.get("task") in JOB_TASKS:
        _refused(headers.get("id"), f"the worker refused the job's message: {exc}", "rejected")


@signals.task_unknown.connect
def _on_task_unknown(name: str = "", id: str = "", **_: Any) -> None:
    if name.startswith(TASK_NAMESPACE):
        message = f"the worker has no task {name!r}: it runs another version of jupyter-celery"
        _refused(id, message, "unknown task")


@signals.worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    install_tqdm_bridge()


def _invalid(message: Any, exc: Exception) -> ReportedFailure:
    """End the stream of a job whose message is invalid; the error to raise."""
    job_id = message.get("id") if isinstance(message, dict) else None
    if job_id:
        _report(
            str(job_id),
            Event(EventKind.FAILED, {"error_type": "ProtocolError", "message": str(exc), "reason": "invalid"}),
        )
    return ReportedFailure(str(exc))


def _attempt(task: Task, job_id: str) -> int | None:
    """This attempt's number, or None when the job already ended (never run a job twice).

    A message can come back for a job that ended (its worker lost the broker before it could
    acknowledge it); a message re-delivered after its worker was lost says so on the stream.
    """
    request = task.request
    attempt = int(request.retries or 0) + 1
    redelivered = bool((request.delivery_info or {}).get("redelivered"))
    if (redelivered or attempt > 1) and context().events.ended(job_id) is not None:
        return None
    if redelivered:
        reason = "re-delivered after its worker was lost"
        _report(job_id, Event(EventKind.RETRYING, {"attempt": attempt, "reason": reason}))
    return attempt


def _cancel_watch(task: Task) -> CancelWatch:
    """This process's cancel watcher; it terminates a job through Celery after the grace period."""

    def terminate(job_id: str) -> None:
        task.app.control.revoke(job_id, terminate=True, signal="SIGTERM")

    ctx = context()
    return cancel_watch(ctx.events, terminate, ctx.settings.cancel_grace)


def _parse(task: Task, message: Any, kind: type[SpecT]) -> tuple[SpecT, int | None]:
    """The job's spec and this attempt's number (None: the job already ended); an invalid message
    ends the job's stream and fails the task."""
    try:
        spec = kind.from_message(message)
    except (ProtocolError, TypeError, AttributeError) as exc:
        raise _invalid(message, exc) from None
    return spec, _attempt(task, spec.id)


def _run_job(task: Task, message: dict[str, Any], make: Callable[[JobSpec, int], Work]) -> dict[str, Any]:
    """One attempt of a cell or function job: the same path for every kind (see execution.py)."""
    spec, attempt = _parse(task, message, JobSpec)
    if attempt is None:
        return {"job": spec.id, "skipped": "the job had already ended"}
    work = make(spec, attempt)
    if work.check_cancel_first and context().events.cancel_requested(spec.id):
        last = Event(EventKind.CANCELLED, {"reason": "cancelled before it started"})
        _report(spec.id, last)
    else:
        watch = _cancel_watch(task)
        cancel = watch.watch(spec.id)
        try:
            last = run_job(work, context(), worker=str(task.request.hostname), cancel=cancel)
        finally:
            watch.unwatch()
    if last.kind is EventKind.SUCCEEDED:
        return summary(spec, last)
    if last.kind is EventKind.RETRYING:  # a function asked for its next attempt
        retries = spec.retry_policy.retries + WORKER_LOST_RETRIES
        raise task.retry(countdown=work.retry_in, max_retries=retries)
    if last.kind is EventKind.CANCELLED:
        task.backend.mark_as_revoked(spec.id, str(last.fields.get("reason")), request=task.request)
        raise Ignore()
    raise ReportedFailure(f"{last.fields.get('error_type')}: {last.fields.get('message')}")


def _work(spec: JobSpec, attempt: int) -> Work:
    """The work of a function job: one call, or a chunk of a map."""
    return ChunkWork(spec, attempt) if spec.kind == KIND_CHUNK else FunctionWork(spec, attempt)


def register(app: Celery) -> None:
    """Register the tasks and the worker heartbeat on ``app``."""
    app.steps["worker"].add(Heartbeat)

    @app.task(name=TASK_RUN_CELL, base=JobTask, **JOB_TASK_OPTIONS)
    def run_cell_task(self: Task, message: dict[str, Any]) -> dict[str, Any]:
        return _run_job(self, message, CellWork)

    @app.task(name=TASK_RUN_FUNCTION, base=JobTask, **JOB_TASK_OPTIONS)
    def run_function_task(self: Task, message: dict[str, Any]) -> dict[str, Any]:
        """A function call (``jc.submit``) or a chunk of a map (``jc.map``)."""
        return _run_job(self, message, _work)

    @app.task(name=TASK_RUN_NOTEBOOK, base=NotebookTask, **JOB_TASK_OPTIONS)
    def run_notebook_task(self: Task, message: dict[str, Any]) -> dict[str, Any]:
        """One attempt of a scheduled notebook run; a failed attempt with retries left queues the next one."""
        spec, attempt = _parse(self, message, NotebookRunSpec)
        if attempt is None:
            return {"run": spec.id, "skipped": "the run had already ended"}
        ctx = context()
        watch = _cancel_watch(self)
        watch.watch(spec.id)  # a cancelled run is terminated after the grace period
        try:
            last = run_notebook(spec, ctx, worker=str(self.request.hostname), attempt=attempt)
        finally:
            watch.unwatch()
        if last.kind is EventKind.RETRYING:
            raise self.retry(countdown=spec.retry_delay, max_retries=spec.retries)
        if last.kind is EventKind.FAILED:
            raise ReportedFailure(f"{last.fields.get('error_type')}: {last.fields.get('message')}")
        return {"run": spec.id, "state": last.kind.value}

    @app.task(name=TASK_ECHO)
    def echo(value: Any = None) -> Any:
        """Return its argument: the raw-Celery anchor of the benchmarks."""
        return value
