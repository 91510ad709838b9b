"""Running one job's code on a worker: load inputs, execute, bring back outputs, report.

The terminal event is written only after the outputs are stored (DESIGN §3).
"""

from __future__ import annotations

import builtins
import os
import threading
import traceback
from types import TracebackType
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from jupyter_celery.core import runtime
from jupyter_celery.core.cellcode import compile_cell, register_source
from jupyter_celery.core.codec import Codec, Encoded
from jupyter_celery.core.errors import CancelRequested, DecodingError, EncodingError, JupyterCeleryError
from jupyter_celery.core.protocol import Event, EventKind, JobSpec
from jupyter_celery.worker.batching import EventBatcher
from jupyter_celery.worker.capture import job_io
from jupyter_celery.worker.context import WorkerContext

# The key under which the cell's final expression travels in the result manifest.
VALUE = "value"


def _user_traceback(exc: BaseException, filename: str) -> str:
    """The traceback from the first frame of the user's cell down (worker internals cut off)."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != filename:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb if tb is not None else exc.__traceback__))


def _failed(error_type: str, message: str, tb: str = "", reason: str = "error") -> Event:
    return Event(EventKind.FAILED, {"error_type": error_type, "message": message, "traceback": tb, "reason": reason})


def _collect_outputs(
    spec: JobSpec, namespace: dict[str, Any], codec: Codec, key_prefix: str
) -> tuple[dict[str, Encoded], dict[str, str]]:
    """Encode the wanted outputs; in non-strict mode unencodable or missing ones are skipped."""
    outputs: dict[str, Encoded] = {}
    skipped: dict[str, str] = {}
    for name in spec.outputs:
        if name not in namespace:
            if spec.strict_outputs:
                raise EncodingError(name, "the cell did not assign it")
            continue
        try:
            outputs[name] = codec.encode(name, namespace[name], key_prefix)
        except EncodingError as exc:
            if spec.strict_outputs:
                raise
            skipped[name] = exc.reason
    return outputs, skipped


def run_cell(spec: JobSpec, ctx: WorkerContext, worker: str, attempt: int, cancel: threading.Event) -> Event:
    """Execute a cell job, reporting every outcome on its stream; return its terminal event.

    The terminal event is written last: after every output event, and after the outputs are stored.
    ``cancel`` is set (by the process's cancel watcher) once someone asked the job to stop.
    """
    batcher = EventBatcher(ctx.events, spec.id, attempt)
    batcher.add(Event(EventKind.STARTED, {"worker": worker, "pid": os.getpid(), "attempt": attempt}), lazy=True)
    try:
        terminal = _execute(spec, ctx, batcher, cancel)
    except BaseException:
        batcher.close()
        raise
    batcher.close(terminal)
    return terminal


def summary(spec: JobSpec, terminal: Event) -> dict[str, Any]:
    """What Celery's result backend keeps of a succeeded job (the manifest stays on the stream)."""
    manifest: dict[str, Any] = terminal.fields["result"]
    return {"job": spec.id, "outputs": sorted(manifest["outputs"]), "has_value": VALUE in manifest}


def _execute(  # noqa: PLR0911 - one outcome per way a job can end
    spec: JobSpec, ctx: WorkerContext, batcher: EventBatcher, cancel: threading.Event
) -> Event:
    codec = ctx.codec
    prefix = f"{spec.owner}/jobs/{spec.id}"
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "__builtins__": builtins,
        "progress": runtime.progress,
        "display": runtime.display,
    }
    try:
        compiled = compile_cell(spec.code, spec.filename, spec.first_line)
        for name, encoded in spec.inputs.items():
            namespace[name] = codec.decode(name, encoded)
    except JupyterCeleryError as exc:
        return _failed(type(exc).__name__, str(exc), reason="input")

    register_source(spec.code, spec.filename, spec.first_line)
    value: Any = None
    try:
        with job_io(batcher, cancel):
            exec(compiled.body, namespace)
            if compiled.final_expression is not None:
                value = eval(compiled.final_expression, namespace)
    except CancelRequested:
        return Event(EventKind.CANCELLED, {"reason": "cancelled on request; the job stopped at a cancellation point"})
    except SoftTimeLimitExceeded:
        limit = f" of {spec.timeout:g}s" if spec.timeout else ""
        return _failed("JobTimeout", f"the job ran over its time limit{limit} and was stopped", reason="timeout")
    except BaseException as exc:  # the user's code may raise anything, SystemExit included
        if isinstance(exc, SystemExit) and cancel.is_set():
            # Celery terminated the process after the cancel grace period: let it exit; the
            # worker's main process reports the job cancelled (task_revoked).
            raise
        return _failed(type(exc).__qualname__, str(exc), _user_traceback(exc, spec.filename))

    try:
        outputs, skipped = _collect_outputs(spec, namespace, codec, f"{prefix}/out")
        manifest: dict[str, Any] = {"outputs": outputs, "skipped": skipped}
        if value is not None:
            try:
                manifest[VALUE] = codec.encode(VALUE, value, f"{prefix}/out")
            except EncodingError as exc:
                manifest[VALUE] = {"enc": "repr", "text": repr(value), "reason": exc.reason}
    except (EncodingError, DecodingError) as exc:
        return _failed(type(exc).__name__, str(exc), reason="output")
    except JupyterCeleryError as exc:
        return _failed(type(exc).__name__, str(exc), reason="store")
    return Event(EventKind.SUCCEEDED, {"result": manifest})
