"""The messages the kernel side (and beat) send to the worker side: JSON-safe job specs.

A message carries a protocol version (``PROTOCOL_VERSION``); a worker refuses one of another
version, or with fields it does not know, with a clear :class:`ProtocolError` that ends the job.
The names these messages are sent under, and the events they produce, are in
:mod:`jupyter_celery.core.protocol`.
"""

from __future__ import annotations

import functools
import platform
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from jupyter_celery.core.errors import ProtocolError
from jupyter_celery.core.protocol import DEFAULT_QUEUE, OVERLAP_SKIP, PROTOCOL_VERSION


@functools.cache
def _fingerprint() -> tuple[tuple[str, str], ...]:
    import cloudpickle

    return (("python", platform.python_version()), ("cloudpickle", cloudpickle.__version__), ("platform", sys.platform))


def environment_fingerprint() -> dict[str, str]:
    """What a worker needs to know to judge whether it can load the kernel's pickles."""
    return dict(_fingerprint())


@dataclass(frozen=True)
class RetryPolicy:
    """How a function job (or each item of a map) is tried again after a transient failure.

    ``on`` names the exception types that are transient (``module.QualName``, matched against the
    raised exception's classes, so subclasses count); ``delay`` is the first backoff in seconds,
    doubled at each attempt up to ``max_delay``, with jitter (see :mod:`jupyter_celery.core.retry`).
    """

    retries: int = 0
    on: tuple[str, ...] = ()
    delay: float = 1.0
    max_delay: float = 60.0

    def to_message(self) -> dict[str, Any]:
        return {"retries": self.retries, "on": list(self.on), "delay": self.delay, "max_delay": self.max_delay}

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> RetryPolicy:
        return cls(
            retries=int(message.get("retries", 0)),
            on=tuple(message.get("on", ())),
            delay=float(message.get("delay", 1.0)),
            max_delay=float(message.get("max_delay", 60.0)),
        )


@dataclass(frozen=True)
class JobSpec:
    """The message of a job: everything a worker needs, JSON-safe.

    A cell (kind ``cell``): ``code``; ``inputs`` maps variable names to encoded values (see
    :mod:`jupyter_celery.core.codec`); ``outputs`` names the variables to bring back; with
    ``strict_outputs`` a missing or unencodable one is an error, otherwise it is skipped with a
    warning.

    A function call (kind ``function``): ``function`` is the encoded callable (by value when the
    notebook defined it, by reference when a module did), ``args`` / ``kwargs`` its encoded
    arguments, ``retry`` its :class:`RetryPolicy` as a message.

    A chunk of a map (kind ``chunk``): the same ``function``; ``items`` is one encoded list of the
    chunk's items (``fn(item)`` each), ``start`` the map index of the first one.

    ``sources`` maps the file names of notebook-defined functions to the text of their cells, so
    the worker's tracebacks show the lines of the user's code.

    Fields left at their default are not sent (:meth:`to_message`): a function's message carries
    no cell fields and the other way round.
    """

    id: str
    kind: str
    code: str = ""
    queue: str = DEFAULT_QUEUE
    name: str = ""
    owner: str = ""
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    strict_outputs: bool = False
    timeout: float | None = None
    filename: str = "<celery cell>"  # how tracebacks name the cell, e.g. "Cell In[3]"
    first_line: int = 1  # the cell line number of the first line of ``code``
    submitted: float = field(default_factory=time.time)
    environment: dict[str, str] = field(default_factory=dict)
    function: dict[str, Any] | None = None
    args: tuple[dict[str, Any], ...] = ()
    kwargs: dict[str, dict[str, Any]] = field(default_factory=dict)
    retry: dict[str, Any] | None = None
    items: dict[str, Any] | None = None
    start: int = 0
    sources: dict[str, str] = field(default_factory=dict)
    v: int = PROTOCOL_VERSION

    def to_message(self) -> dict[str, Any]:
        """The JSON-safe message, without the fields left at their default (``v`` always).

        A shallow copy: ``asdict`` deep-copies, which costs on every submit.
        """
        message: dict[str, Any] = {}
        for name, default in _SPEC_DEFAULTS.items():
            value = getattr(self, name)
            if name in _ALWAYS_SENT or value != default:
                message[name] = list(value) if isinstance(value, tuple) else value
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> JobSpec:
        data = _checked_message(cls.__dataclass_fields__, message, "job")
        data["outputs"] = tuple(data.get("outputs", ()))
        data["args"] = tuple(data.get("args", ()))
        return cls(**data)

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy.from_message(self.retry or {})


_ALWAYS_SENT = frozenset({"id", "kind", "queue", "owner", "submitted", "v"})


def _defaults(cls: Any) -> dict[str, Any]:
    from dataclasses import MISSING

    defaults: dict[str, Any] = {}
    for name, spec_field in cls.__dataclass_fields__.items():
        if spec_field.default is not MISSING:
            defaults[name] = spec_field.default
        elif spec_field.default_factory is not MISSING:
            defaults[name] = spec_field.default_factory()
        else:
            defaults[name] = None  # required: always differs from None, so always sent
    return defaults


_SPEC_DEFAULTS = _defaults(JobSpec)


@dataclass(frozen=True)
class NotebookRunSpec:
    """The message of one run of a scheduled notebook: everything a worker needs, JSON-safe.

    ``id`` is the run id, the job id and the Celery task id. ``notebook_key`` is the notebook's
    uploaded copy in the store (workers never read the user's filesystem); ``parameters`` are
    injected by papermill after the cell tagged ``parameters``. ``timeout`` bounds the whole run
    (kernel start included); a failed or timed-out run is tried again ``retries`` times,
    ``retry_delay`` seconds apart. ``trigger`` says who started it: ``beat`` or ``manual``.
    """

    id: str
    owner: str
    schedule: str
    notebook_key: str
    parameters: dict[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    kernel: str = "python3"
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 0.0
    overlap: str = OVERLAP_SKIP
    trigger: str = "manual"
    submitted: float = field(default_factory=time.time)
    v: int = PROTOCOL_VERSION

    def to_message(self) -> dict[str, Any]:
        message = {f: getattr(self, f) for f in self.__dataclass_fields__}
        message["parameters"] = dict(self.parameters)
        return message

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> NotebookRunSpec:
        return cls(**_checked_message(cls.__dataclass_fields__, message, "notebook run"))


def _checked_message(known: Any, message: dict[str, Any], what: str) -> dict[str, Any]:
    """``message`` as constructor arguments, after checking its version and fields."""
    version = message.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"{what} message has protocol version {version!r}; this worker speaks {PROTOCOL_VERSION}")
    unknown = set(message) - set(known)
    if unknown:
        raise ProtocolError(f"{what} message has unknown field(s) {sorted(unknown)}")
    return dict(message)
