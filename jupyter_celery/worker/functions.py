"""Function calls as a job's work: ``jc.submit(fn, *args)`` and the chunks of ``jc.map(fn, items)``.

Both decode the function (cloudpickled by value when the notebook defined it, by reference when an
installed module did) and their arguments with the codec, like a cell's inputs, and run through
the same :func:`~jupyter_celery.worker.execution.run_job` as cells.

A call that raises a transient exception (see :mod:`jupyter_celery.core.retry`) with attempts left
ends its attempt with a ``retrying`` event; the task then queues the next attempt after the
backoff. A chunk runs its items one after the other: a failing item is recorded with its index
and traceback and the others still run; a transient failure of an item is retried in place.
"""

from __future__ import annotations

import time
from types import CodeType
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded

from jupyter_celery.core.cellcode import register_source
from jupyter_celery.core.codec import Codec, Encoded
from jupyter_celery.core.errors import CancelRequested, DecodingError, EncodingError
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import Event, EventKind
from jupyter_celery.core.retry import backoff, is_transient
from jupyter_celery.worker.capture import JobReporter
from jupyter_celery.worker.execution import VALUE, Work, failure_reason, user_traceback

PROGRESS_EVERY = 0.1  # seconds between two progress reports of a chunk
DYNAMIC_CODE = "<dynamic-code>"  # the file name cloudpickle gives the code of functions it sends by value


class FunctionWork(Work):
    """``fn(*args, **kwargs)``; its return value is the job's result."""

    value: Any = None

    def load(self, codec: Codec) -> None:
        spec = self.spec
        self.function = _decode_function(codec, spec.function, spec.sources)
        self.args = [codec.decode(f"arg{i}", encoded) for i, encoded in enumerate(spec.args)]
        self.kwargs = {name: codec.decode(f"kwarg.{name}", encoded) for name, encoded in spec.kwargs.items()}

    def run(self, reporter: JobReporter) -> None:
        self.value = self.function(*self.args, **self.kwargs)

    def collect(self, codec: Codec) -> dict[str, Any]:
        return {"outputs": {}, "skipped": {}, VALUE: codec.encode(VALUE, self.value, self.tag)}

    def failure(self, exc: BaseException) -> Event:
        policy = self.spec.retry_policy
        if self.attempt > policy.retries or not is_transient(exc, policy.on):
            return super().failure(exc)
        self.retry_in = backoff(self.attempt, policy)
        reason = (
            f"attempt {self.attempt} of {policy.retries + 1} failed with {type(exc).__qualname__}: {exc}; "
            f"trying again in {self.retry_in:.3g}s"
        )
        return Event(EventKind.RETRYING, {"attempt": self.attempt + 1, "reason": reason})


class ChunkWork(Work):
    """``fn(item)`` for each item of a map's chunk; the results in order, failures by index."""

    check_cancel_first = True

    def load(self, codec: Codec) -> None:
        self.function = _decode_function(codec, self.spec.function, self.spec.sources)
        items = codec.decode("items", self.spec.items or {"enc": "json", "value": []})
        if not isinstance(items, list):
            raise DecodingError("items", f"a chunk's items must be a list, not {type(items).__name__}")
        self.items: list[Any] = items
        self.values: list[Any] = [None] * len(items)
        self.errors: list[list[Any]] = []  # [index in the map, error type, message, traceback]
        self.seconds = 0.0

    def run(self, reporter: JobReporter) -> None:
        start, total = self.spec.start, len(self.items)
        began = last_report = time.perf_counter()
        try:
            for i, item in enumerate(self.items):
                if self.cancel.is_set():
                    raise CancelRequested("the map was cancelled")
                try:
                    self.values[i] = self._call(start + i, item)
                except SoftTimeLimitExceeded:
                    self._timed_out(i)
                    break
                except Exception as exc:  # one item's failure does not stop the others
                    self.errors.append([start + i, type(exc).__qualname__, str(exc), user_traceback(exc)])
                now = time.perf_counter()
                if now - last_report >= PROGRESS_EVERY:
                    reporter.progress(i + 1, total, "")
                    last_report = now
        finally:
            self.seconds = time.perf_counter() - began

    def _call(self, index: int, item: Any) -> Any:
        policy = self.spec.retry_policy
        attempt = 1
        while True:
            try:
                return self.function(item)
            except SoftTimeLimitExceeded:
                raise
            except Exception as exc:
                if attempt > policy.retries or not is_transient(exc, policy.on):
                    raise
                delay = backoff(attempt, policy)
                reason = f"item {index}: attempt {attempt} failed with {type(exc).__qualname__}: {exc}"
                assert self.batcher is not None
                self.batcher.add(Event(EventKind.RETRYING, {"attempt": attempt + 1, "reason": reason}))
                if self.cancel.wait(delay):
                    raise CancelRequested("the map was cancelled") from None
                attempt += 1

    def _timed_out(self, i: int) -> None:
        """The chunk ran over its time limit while item ``i`` ran: it and the rest of the chunk fail."""
        start, limit, n = self.spec.start, self.spec.timeout, len(self.items)
        budget = f" ({limit / n:g}s per item, {limit:g}s for its chunk of {n})" if limit else ""
        self.errors.append([start + i, "JobTimeout", f"the item ran over its time limit{budget}", ""])
        skipped = "not run: an earlier item of its chunk ran over the time limit"
        self.errors += [[start + j, "JobTimeout", skipped, ""] for j in range(i + 1, n)]

    def collect(self, codec: Codec) -> dict[str, Any]:
        tag = self.tag
        try:
            values = codec.encode("results", self.values, tag)
        except EncodingError as exc:
            if failure_reason(exc, "") == "store":
                raise
            values = self._encode_one_by_one(codec, tag)
        manifest: dict[str, Any] = {
            "outputs": {}, "skipped": {}, VALUE: values, "done": len(self.items) - len(self.errors),
            "failed": len(self.errors), "seconds": round(self.seconds, 6),
        }  # fmt: skip
        if self.errors:
            self.errors.sort(key=lambda e: int(e[0]))
            manifest["errors"] = codec.encode("errors", self.errors, tag)
        return manifest

    @staticmethod
    def results(manifest: dict[str, Any]) -> list[Encoded]:
        return [manifest.get(VALUE, {}), manifest.get("errors", {})]

    def _encode_one_by_one(self, codec: Codec, tag: ObjectTag) -> dict[str, Any]:
        """A result that cannot be sent fails its own item only."""
        start = self.spec.start
        for i, value in enumerate(self.values):
            try:
                codec.encode("result", value, tag)
            except EncodingError as exc:
                if failure_reason(exc, "") == "store":
                    raise
                self.values[i] = None
                self.errors.append([start + i, "EncodingError", f"the result cannot be sent back: {exc.reason}", ""])
        return codec.encode("results", self.values, tag)


def _decode_function(codec: Codec, encoded: dict[str, Any] | None, sources: dict[str, str]) -> Any:
    if encoded is None:
        raise DecodingError("function", "the job names no function")
    function = codec.decode("function", encoded)
    if not callable(function):
        raise DecodingError("function", f"{type(function).__name__} is not callable")
    if len(sources) == 1:
        _name_cell(function, *next(iter(sources.items())))
    return function


def _name_cell(function: Any, cell: str, text: str) -> None:
    """Give a notebook function's code the name of its cell (cloudpickle names it ``<dynamic-code>``)
    and make the cell's text known, so its tracebacks show the cell's lines."""
    code = getattr(function, "__code__", None)
    if isinstance(code, CodeType) and code.co_filename == DYNAMIC_CODE:
        function.__code__ = _renamed(code, cell)
        register_source(text, cell, 1)


def _renamed(code: CodeType, filename: str) -> CodeType:
    consts = tuple(
        _renamed(c, filename) if isinstance(c, CodeType) and c.co_filename == DYNAMIC_CODE else c
        for c in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)
