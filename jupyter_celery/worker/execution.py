"""Running one job's code on a worker: load inputs, execute, bring back outputs, report.

Large inputs are loaded from the store when the cell uses them (:mod:`jupyter_celery.worker.namespace`).
The terminal event is written only after the outputs are stored (DESIGN §3), in the same
transaction that records the store keys of the outputs as the job's objects (what keeps them
from ``jupyter-celery gc``). A failure of the store is a job failure with ``reason="store"``.
"""

from __future__ import annotations

import os
import threading
import traceback
import warnings
from types import TracebackType
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from jupyter_celery.core import runtime
from jupyter_celery.core.cellcode import compile_cell, register_source
from jupyter_celery.core.codec import Codec, Encoded
from jupyter_celery.core.errors import CancelRequested, DecodingError, EncodingError, JupyterCeleryError, StoreError
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import Event, EventKind, JobSpec
from jupyter_celery.worker.batching import EventBatcher
from jupyter_celery.worker.capture import job_io
from jupyter_celery.worker.context import WorkerContext
from jupyter_celery.worker.namespace import build_namespace

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


def _reason(exc: JupyterCeleryError, otherwise: str) -> str:
    """``store`` when the store is at fault, else ``otherwise``."""
    return "store" if isinstance(exc, StoreError) or isinstance(exc.__cause__, StoreError) else otherwise


def _collect_outputs(
    spec: JobSpec, namespace: dict[str, Any], codec: Codec, tag: ObjectTag
) -> tuple[dict[str, Encoded], dict[str, str]]:
    """Encode the wanted outputs; in non-strict mode unencodable or missing ones are skipped.

    A failure of the store is never skipped: it fails the job.
    """
    outputs: dict[str, Encoded] = {}
    skipped: dict[str, str] = {}
    for name in spec.outputs:
        if name not in namespace:
            if spec.strict_outputs:
                raise EncodingError(name, "the cell did not assign it")
            continue
        try:
            outputs[name] = codec.encode(name, namespace[name], tag)
        except EncodingError as exc:
            if spec.strict_outputs or _reason(exc, "") == "store":
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
    manifest: dict[str, Any] = terminal.fields.get("result") or {}
    encoded = [*manifest.get("outputs", {}).values(), manifest.get(VALUE, {})]
    batcher.close(terminal, objects=[key for e in encoded for key in Codec.keys_of(e)])
    return terminal


def summary(spec: JobSpec, terminal: Event) -> dict[str, Any]:
    """What Celery's result backend keeps of a succeeded job (the manifest stays on the stream)."""
    manifest: dict[str, Any] = terminal.fields["result"]
    return {"job": spec.id, "outputs": sorted(manifest["outputs"]), "has_value": VALUE in manifest}


def _execute(  # noqa: PLR0911 - one outcome per way a job can end
    spec: JobSpec, ctx: WorkerContext, batcher: EventBatcher, cancel: threading.Event
) -> Event:
    codec = ctx.codec
    try:
        compiled = compile_cell(spec.code, spec.filename, spec.first_line)
        namespace, lazy = build_namespace(spec, codec)
        namespace.update(progress=runtime.progress, display=runtime.display)
    except JupyterCeleryError as exc:
        return _failed(type(exc).__name__, str(exc), reason=_reason(exc, "input"))

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
        if lazy is not None and exc is lazy.failure:  # an input could not be loaded at its first use
            return _failed(type(exc).__name__, str(exc), reason=_reason(exc, "input"))
        return _failed(type(exc).__qualname__, str(exc), _user_traceback(exc, spec.filename))
    if lazy is not None and lazy.failure is not None:  # the cell caught it, but the job did not get its input
        return _failed(type(lazy.failure).__name__, str(lazy.failure), reason=_reason(lazy.failure, "input"))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return _outputs(spec, namespace, value, codec)
        finally:
            for warning in caught:  # e.g. a frame that travels pickled: the notebook shows it
                batcher.add_text(EventKind.STDERR, f"{warning.category.__name__}: {warning.message}\n")


def _outputs(spec: JobSpec, namespace: dict[str, Any], value: Any, codec: Codec) -> Event:
    """The terminal event of a cell that ran: its outputs and value stored, or why they could not be."""
    tag = ObjectTag(spec.owner, spec.id, "output")
    try:
        outputs, skipped = _collect_outputs(spec, namespace, codec, tag)
        manifest: dict[str, Any] = {"outputs": outputs, "skipped": skipped}
        if value is not None:
            try:
                manifest[VALUE] = codec.encode(VALUE, value, tag)
            except EncodingError as exc:
                if _reason(exc, "") == "store":
                    raise
                manifest[VALUE] = {"enc": "repr", "text": repr(value), "reason": exc.reason}
    except (EncodingError, DecodingError) as exc:
        return _failed(type(exc).__name__, str(exc), reason=_reason(exc, "output"))
    except JupyterCeleryError as exc:
        return _failed(type(exc).__name__, str(exc), reason="store")
    return Event(EventKind.SUCCEEDED, {"result": manifest})
