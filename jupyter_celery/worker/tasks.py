"""The task implementations, registered under the names of :mod:`jupyter_celery.core.protocol`,
and the Celery hooks that end a job's stream when it ends outside its task body.

Every way a job can end writes exactly one terminal event (the event log drops any second one):

- in the task body (child process): ``succeeded``, ``failed`` (exception, soft time limit, bad
  input or output), ``cancelled`` (stopped at a cancellation point);
- ``task_failure`` in the main process: the hard time limit killed the child, or the child was
  lost more often than the job may be retried;
- ``on_retry`` in the main process: the child was lost and the job is sent again (``retrying``);
- ``task_revoked`` in the main process: cancelled before it started, or terminated after the
  cancel grace period.
"""

from __future__ import annotations

import contextlib
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import Celery, Task, signals
from celery.exceptions import Ignore, TimeLimitExceeded

from jupyter_celery.core.errors import ConnectionFailed, ProtocolError
from jupyter_celery.core.protocol import TASK_ECHO, TASK_RUN_CELL, Event, EventKind, JobSpec
from jupyter_celery.worker.cancel import cancel_watch
from jupyter_celery.worker.context import context
from jupyter_celery.worker.execution import run_cell, summary
from jupyter_celery.worker.heartbeat import Heartbeat
from jupyter_celery.worker.tqdm_bridge import install_tqdm_bridge

JOB_TASKS = frozenset({TASK_RUN_CELL})
# How often a job whose worker process died (killed, out of memory) is sent again.
WORKER_LOST_RETRIES = 2


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
        attempt = int(self.request.retries or 0) + 2
        reason = f"the worker process was lost ({exc}); running the job again"
        _report(task_id, Event(EventKind.RETRYING, {"attempt": attempt, "reason": reason}))


@signals.task_failure.connect
def _on_task_failure(sender: Any = None, task_id: str = "", exception: BaseException | None = None, **_: Any) -> None:
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
    _report(task_id, Event(EventKind.FAILED, fields))


@signals.task_revoked.connect
def _on_task_revoked(sender: Any = None, request: Any = None, terminated: bool = False, **_: Any) -> None:
    if getattr(sender, "name", None) not in JOB_TASKS or request is None:
        return
    reason = "terminated after the cancel grace period" if terminated else "cancelled before it started"
    _report(request.id, Event(EventKind.CANCELLED, {"reason": reason}))


@signals.worker_process_init.connect
def _on_process_init(**_: Any) -> None:
    install_tqdm_bridge()


def _spec_or_report(message: Any) -> JobSpec:
    try:
        return JobSpec.from_message(message)
    except (ProtocolError, TypeError) as exc:
        job_id = message.get("id") if isinstance(message, dict) else None
        if job_id:
            fields = {"error_type": "ProtocolError", "message": str(exc), "reason": "invalid"}
            _report(str(job_id), Event(EventKind.FAILED, fields))
        raise ReportedFailure(str(exc)) from None


def register(app: Celery) -> None:
    """Register the tasks and the worker heartbeat on ``app``."""
    app.steps["worker"].add(Heartbeat)

    # track_started=False: the job stream's `started` event (and the job record) already say the job
    # runs; Celery's STARTED state would be a second write on the critical path of every job
    # (measured: ~0.6 ms of a ~4.5 ms round trip). SUCCESS and FAILURE are still stored.
    @app.task(
        name=TASK_RUN_CELL,
        bind=True,
        base=JobTask,
        track_started=False,
        retry_on_worker_lost=True,
        max_retries=WORKER_LOST_RETRIES,
        default_retry_delay=0,
    )
    def run_cell_task(self: Task, message: dict[str, Any]) -> dict[str, Any]:
        spec = _spec_or_report(message)
        request = self.request
        attempt = int(request.retries or 0) + 1
        ctx = context()
        redelivered = bool((request.delivery_info or {}).get("redelivered"))
        if redelivered or attempt > 1:
            # A message can come back for a job that already ended (its worker lost the broker
            # before acknowledging it): never run a job twice once it has ended.
            final = ctx.events.ended(spec.id)
            if final is not None:
                return {"job": spec.id, "skipped": f"the job had already ended ({final})"}
        if redelivered:
            reason = "re-delivered after its worker stopped"
            ctx.events.append(spec.id, Event(EventKind.RETRYING, {"attempt": attempt, "reason": reason}))

        def terminate(job_id: str) -> None:
            self.app.control.revoke(job_id, terminate=True, signal="SIGTERM")

        watch = cancel_watch(ctx.events, terminate, ctx.settings.cancel_grace)
        cancel = watch.watch(spec.id)
        try:
            terminal = run_cell(spec, ctx, worker=str(request.hostname), attempt=attempt, cancel=cancel)
        finally:
            watch.unwatch()
        if terminal.kind is EventKind.SUCCEEDED:
            return summary(spec, terminal)
        if terminal.kind is EventKind.CANCELLED:
            self.backend.mark_as_revoked(spec.id, str(terminal.fields.get("reason")), request=request)
            raise Ignore()
        raise ReportedFailure(f"{terminal.fields.get('error_type')}: {terminal.fields.get('message')}")

    @app.task(name=TASK_ECHO)
    def echo(value: Any = None) -> Any:
        """Return its argument: the raw-Celery anchor of the benchmarks."""
        return value
