"""One run of a scheduled notebook on a worker: papermill with the schedule's parameters.

The run takes its schedule's overlap lock (unless overlapping runs are allowed), executes the
notebook uploaded to the store, reports each cell as a ``progress`` event and the cells' output
as ``stdout``/``stderr`` events (through the job's batched relay), stores the executed notebook
and its HTML rendering (a failed run's notebook holds the outputs up to the error), records the
run, and only then writes the terminal event. ``timeout`` bounds the whole run: the running cell
is stopped when it expires (its kernel is shut down) and the run fails with reason ``timeout``.
papermill, nbclient and nbconvert are imported here only when a notebook runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from jupyter_celery.core.errors import JupyterCeleryError
from jupyter_celery.core.events import connect_redis
from jupyter_celery.core.messages import NotebookRunSpec
from jupyter_celery.core.protocol import OVERLAP_SKIP, Event, EventKind, Keys, run_output_path
from jupyter_celery.core.queues import RUN_GRACE, hard_limit, profile
from jupyter_celery.scheduling.runs import RunLog
from jupyter_celery.worker.batching import EventBatcher
from jupyter_celery.worker.capture import job_io
from jupyter_celery.worker.context import WorkerContext

ANSI_RE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
SKIPPED_TAGS = frozenset({"injected-parameters", "papermill-error-cell-tag"})  # cells papermill adds
KERNEL_START_TIMEOUT = 60.0

_runs: tuple[int, RunLog] | None = None


def run_log(ctx: WorkerContext) -> RunLog:
    """This process's run history writer (the broker's Redis), created after the fork."""
    global _runs  # noqa: PLW0603 - one per process, like the worker context
    if _runs is None or _runs[0] != os.getpid():
        settings = ctx.settings
        _runs = (
            os.getpid(),
            RunLog(connect_redis(settings.broker_url), Keys(settings.key_prefix), settings.broker_url),
        )
    return _runs[1]


def lock_ttl(spec: NotebookRunSpec) -> float:
    """How long the overlap lock outlives a worker that died holding it: the run's hard limit."""
    if spec.timeout:
        return hard_limit(spec.timeout + RUN_GRACE)
    return float(profile(spec.queue).time_limit)


@dataclass
class Outcome:
    """What a run produced: output keys, and for a failure its cell, error and traceback."""

    output_notebook: str = ""
    output_html: str = ""
    error_type: str = ""
    message: str = ""
    traceback: str = ""
    reason: str = ""
    failed_cell: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return bool(self.error_type)

    def record(self) -> dict[str, Any]:
        error = f"{self.error_type}: {self.message}" if self.message else self.error_type
        return {
            "output_notebook": self.output_notebook, "output_html": self.output_html, "failed_cell": self.failed_cell,
            "error": error, "reason": self.reason, "traceback": self.traceback,
        }  # fmt: skip

    def terminal(self) -> Event:
        if self.failed:
            fields = {"error_type": self.error_type, "message": self.message, "traceback": self.traceback,
                      "reason": self.reason}  # fmt: skip
            return Event(EventKind.FAILED, fields)
        outputs = {k: {"enc": "json", "value": v} for k, v in self.record().items() if k.startswith("output_")}
        return Event(EventKind.SUCCEEDED, {"result": {"outputs": outputs, "skipped": {}}})


def run_notebook(spec: NotebookRunSpec, ctx: WorkerContext, worker: str, attempt: int) -> Event:
    """Run, store, record and report one attempt; return the last event written.

    That is the terminal event, or a ``retrying`` event when the attempt failed and the
    schedule's retries are not used up (the caller then queues the next attempt).
    """
    runs = run_log(ctx)
    batcher = EventBatcher(ctx.events, spec.id, attempt)
    if spec.overlap == OVERLAP_SKIP:
        holder = runs.acquire(spec.owner, spec.schedule, spec.id, lock_ttl(spec))
        if holder is not None:
            reason = f"skipped: run {holder} of {spec.schedule!r} was still running"
            runs.finish(spec.id, "skipped", reason="overlap", error=reason, worker=worker, attempt=attempt)
            skipped = Event(EventKind.CANCELLED, {"reason": reason})
            batcher.close(skipped)
            return skipped
    try:
        batcher.add(Event(EventKind.STARTED, {"worker": worker, "pid": os.getpid(), "attempt": attempt}), lazy=True)
        started = {"started": time.time()} if attempt == 1 else {}
        runs.update(spec.id, state="running", attempt=attempt, worker=worker, **started)
        try:
            outcome = execute(spec, ctx, batcher)
        except BaseException:
            batcher.close()
            raise
    finally:
        if spec.overlap == OVERLAP_SKIP:
            runs.release(spec.owner, spec.schedule, spec.id)
    for note in outcome.notes:
        batcher.add_text(EventKind.STDERR, f"[jupyter-celery: {note}]\n")
    if outcome.failed and attempt <= spec.retries:
        runs.update(spec.id, state="retrying", **outcome.record())
        retrying = Event(
            EventKind.RETRYING,
            {"attempt": attempt + 1, "reason": f"attempt {attempt} failed: {outcome.record()['error']}"},
        )
        batcher.close(retrying)
        return retrying
    runs.finish(spec.id, "failed" if outcome.failed else "succeeded", **outcome.record())
    terminal = outcome.terminal()
    batcher.close(terminal)
    return terminal


def execute(spec: NotebookRunSpec, ctx: WorkerContext, batcher: EventBatcher) -> Outcome:
    """Execute the notebook with papermill in a scratch directory; store what it produced."""
    deadline = time.monotonic() + spec.timeout if spec.timeout else None
    workdir = Path(tempfile.mkdtemp(prefix="jc-run-"))
    outcome = Outcome()
    try:
        try:
            (workdir / "input.ipynb").write_bytes(ctx.store.get(spec.notebook_key))
        except JupyterCeleryError as exc:
            return Outcome(error_type=type(exc).__name__, message=str(exc), reason="input")
        current = _papermill(spec, workdir, batcher, deadline, outcome)
        output = workdir / "output.ipynb"
        if output.exists():
            document = json.loads(output.read_text())
            if outcome.reason == "timeout" and current is not None:
                _mark_timeout(document, current, outcome.message)
            if outcome.failed:
                outcome.failed_cell = failing_cell(document)
            try:
                _store_outputs(spec, ctx, document, outcome)
            except JupyterCeleryError as exc:
                if not outcome.failed:
                    outcome.error_type, outcome.message, outcome.reason = type(exc).__name__, str(exc), "store"
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return outcome


def _papermill(
    spec: NotebookRunSpec, workdir: Path, batcher: EventBatcher, deadline: float | None, outcome: Outcome
) -> int | None:
    """Run papermill; fill ``outcome``'s failure fields; return the index of the cell running at the end."""
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    from jupyter_celery.worker.papermill_engine import ENGINE_NAME, Tracker

    def on_cell(done: int, total: int, cell: dict[str, Any]) -> None:
        first = next(iter(str("".join(cell.get("source", ""))).strip().splitlines()), "")
        batcher.add(Event(EventKind.PROGRESS, {"done": done, "total": total, "message": first[:80]}))

    def remaining(_cell: Any = None) -> float | None:
        return None if deadline is None else max(0.1, deadline - time.monotonic())

    tracker = Tracker(on_cell)
    limit = f" of {spec.timeout:g}s" if spec.timeout else ""
    try:
        with job_io(batcher):  # no cooperative stop inside papermill: a cancel terminates the run
            papermill.execute_notebook(
                str(workdir / "input.ipynb"), str(workdir / "output.ipynb"), parameters=spec.parameters,
                engine_name=ENGINE_NAME, tracker=tracker, kernel_name=spec.kernel, progress_bar=False,
                cwd=str(workdir), stdout_file=sys.stdout, stderr_file=sys.stderr,
                start_timeout=max(1, int(min(KERNEL_START_TIMEOUT, remaining() or KERNEL_START_TIMEOUT))),
                timeout_func=remaining, shutdown_kernel="immediate",
            )  # fmt: skip
    except PapermillExecutionError as exc:
        outcome.error_type, outcome.message, outcome.reason = exc.ename, exc.evalue, "error"
        outcome.traceback = ANSI_RE.sub("", "\n".join(exc.traceback))
    except (CellTimeoutError, SoftTimeLimitExceeded, Exception) as exc:
        timed_out = isinstance(exc, (CellTimeoutError, SoftTimeLimitExceeded)) or (
            deadline is not None and time.monotonic() >= deadline - 0.2
        )
        if timed_out:
            outcome.error_type, outcome.reason = "JobTimeout", "timeout"
            outcome.message = f"the run went over its time limit{limit} and was stopped"
        else:
            outcome.error_type, outcome.message, outcome.reason = type(exc).__name__, str(exc), "error"
    return tracker.current


def _mark_timeout(document: dict[str, Any], index: int, message: str) -> None:
    """Show in the stored notebook which cell the time limit stopped."""
    cells = document.get("cells", [])
    if not 0 <= index < len(cells):
        return
    cell = cells[index]
    cell.setdefault("outputs", []).append(
        {"output_type": "error", "ename": "JobTimeout", "evalue": message, "traceback": [f"JobTimeout: {message}"]}
    )
    cell.setdefault("metadata", {}).setdefault("papermill", {}).update(exception=True, status="failed")
    document.setdefault("metadata", {}).setdefault("papermill", {})["exception"] = True


def failing_cell(document: dict[str, Any]) -> int | None:
    """The index, in the schedule's own notebook, of the first cell that failed (None if none did).

    Cells that papermill added (injected parameters, error banners) are not counted.
    """
    index = 0
    for cell in document.get("cells", []):
        metadata = cell.get("metadata", {})
        if SKIPPED_TAGS & set(metadata.get("tags", [])):
            continue
        errors = [
            o for o in cell.get("outputs", [])
            if o.get("output_type") == "error" and not (o.get("ename") == "SystemExit" and o.get("evalue") in ("", "0"))
        ]  # fmt: skip
        if errors or metadata.get("papermill", {}).get("exception") is True:
            return index
        index += 1
    return None


def _store_outputs(spec: NotebookRunSpec, ctx: WorkerContext, document: dict[str, Any], outcome: Outcome) -> None:
    key = run_output_path(spec.owner, spec.schedule, spec.id, "output.ipynb")
    ctx.store.put(key, json.dumps(document, indent=1).encode())
    outcome.output_notebook = key
    try:
        html = render_html(document)
    except Exception as exc:  # nbconvert raises many kinds; the run's own outcome stands
        outcome.notes.append(f"the HTML rendering failed: {type(exc).__name__}: {exc}")
        return
    key = run_output_path(spec.owner, spec.schedule, spec.id, "output.html")
    ctx.store.put(key, html)
    outcome.output_html = key


def render_html(document: dict[str, Any]) -> bytes:
    """The HTML page of an executed notebook (nbconvert)."""
    import nbformat
    from nbconvert import HTMLExporter

    notebook = nbformat.reads(json.dumps(document), as_version=4)  # type: ignore[no-untyped-call]
    body, _resources = HTMLExporter().from_notebook_node(notebook)  # type: ignore[no-untyped-call]
    return str(body).encode()
