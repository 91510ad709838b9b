"""The wire contract: queue names, task names, Redis and store key names, event kinds and the job spec.

This is the only module that formats a key or names a task. The kernel side sends tasks by
these names; the worker side registers its implementations under them.

Redis data model (``<p>`` is the key prefix, ``jc`` by default)::

    <p>:job:<id>            hash    job record: name, queue, owner, kind, state, timestamps, worker
    <p>:job:<id>:events     stream  the job's timeline (one entry per event, see EventKind)
    <p>:job:<id>:cancel     string  set when someone asked to cancel the job (value: request time)
    <p>:job:<id>:objects    set     store keys the job refers to (inputs, outputs): what keeps them from gc
    <p>:owner:<owner>:jobs  zset    job ids of one owner, scored by submission time
    <p>:worker:<hostname>   string  a live worker's heartbeat (JSON: queues, pid, ts); expires when it stops
    <p>:queue:<q>:workers   zset    hostnames consuming queue q, scored by their last heartbeat
    <p>:reader:<id>         stream  wake-ups for one kernel's reader (a new job to follow)

Scheduled notebooks (durable: kept in the broker's Redis, which has persistence on)::

    <p>:schedule:<owner>:<name>          hash    the schedule: ``spec`` (JSON of the schedule model)
    <p>:owner:<owner>:schedules          set     names of one owner's schedules
    <p>:schedule:<owner>:<name>:runs     zset    run ids of one schedule, scored by queue time
    <p>:schedule:<owner>:<name>:running  string  the overlap lock: id of the run in progress (expires)
    <p>:run:<run id>                     hash    one run's record (state, times, output keys, failure)
    <p>:beat:<owner>:<name>              hash    the RedBeat entry (timing, enabled, last run)
    <p>:beat::schedule                   zset    RedBeat's entries by due time
    <p>:beat::lock                       string  RedBeat's lock: one active beat at a time

A run id is also the run's job id (its job record and stream are those of any job) and its
Celery task id. In the object store, a schedule's files live under
``<owner>/schedules/<name>/``: ``notebooks/<digest>.ipynb`` (each uploaded version) and
``runs/<run id>/output.ipynb`` and ``output.html``.

Object-store layout (keys are ``/``-separated, relative to the store URL)::

    <owner>/objects/<d[:2]>/<digest>.<ext>   job objects, content-addressed: the digest (xxh3-128 of the
                                             serialised bytes) names the object, so identical content is
                                             stored once; ext is arrow (Arrow IPC), parquet or pkl
    <owner>/datasets/<name>.parquet          named datasets (``put(df, name=...)``): never collected

Every object carries metadata (S3 user metadata, a sidecar file in the local store): the fields
``OBJECT_METADATA`` below.
"""

from __future__ import annotations

import json
import platform
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from jupyter_celery.core.errors import ProtocolError

PROTOCOL_VERSION = 1

PYTHON_Q = "python_q"
CIRCUIT_Q = "circuit_q"
QUEUES: tuple[str, ...] = (PYTHON_Q, CIRCUIT_Q)
DEFAULT_QUEUE = PYTHON_Q

TASK_RUN_CELL = "jupyter_celery.run_cell"
TASK_ECHO = "jupyter_celery.echo"  # a trivial task: the raw-Celery anchor of the benchmarks
TASK_RUN_NOTEBOOK = "jupyter_celery.run_notebook"  # one run of a scheduled notebook (papermill)
TASK_RUN_FUNCTION = "jupyter_celery.run_function"  # a function call (submit) or a chunk of a map

# Kinds of jobs (the job record's ``kind``): what a worker runs for them.
KIND_CELL = "cell"  # a %%celery cell: code, input variables, output variables
KIND_FUNCTION = "function"  # jc.submit(fn, *args, **kwargs): its result is the function's return value
KIND_CHUNK = "chunk"  # a chunk of jc.map(fn, items): fn(item) for each item, failures per item

# What a scheduled run does when the previous run of its schedule is still running.
OVERLAP_SKIP = "skip"
OVERLAP_ALLOW = "allow"
OVERLAP_POLICIES = (OVERLAP_SKIP, OVERLAP_ALLOW)


class EventKind(str, Enum):
    """Kinds of entries on a job stream, in the order a job usually produces them."""

    QUEUED = "queued"
    STARTED = "started"
    PROGRESS = "progress"
    STDOUT = "stdout"
    STDERR = "stderr"
    DISPLAY = "display"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_KINDS


TERMINAL_KINDS = frozenset({EventKind.SUCCEEDED, EventKind.FAILED, EventKind.CANCELLED, EventKind.LOST})

# The fields each kind carries besides ``v``, ``kind`` and ``ts``. Values are strings on the wire;
# the ones marked JSON here are JSON documents.
EVENT_FIELDS: dict[EventKind, tuple[str, ...]] = {
    EventKind.QUEUED: ("queue", "name"),
    EventKind.STARTED: ("worker", "pid", "attempt"),
    EventKind.PROGRESS: ("done", "total", "message"),
    EventKind.STDOUT: ("text",),
    EventKind.STDERR: ("text",),
    EventKind.DISPLAY: ("data",),
    EventKind.RETRYING: ("attempt", "reason"),
    EventKind.SUCCEEDED: ("result",),
    EventKind.FAILED: ("error_type", "message", "traceback", "reason"),
    EventKind.CANCELLED: ("reason",),
    EventKind.LOST: ("reason",),
}
JSON_FIELDS = frozenset({"result", "data"})

# Job states kept in the job record; the same words as the event kinds that set them.
STATE_BY_KIND: dict[EventKind, str] = {
    EventKind.QUEUED: "queued",
    EventKind.STARTED: "running",
    EventKind.RETRYING: "retrying",
    EventKind.SUCCEEDED: "succeeded",
    EventKind.FAILED: "failed",
    EventKind.CANCELLED: "cancelled",
    EventKind.LOST: "lost",
}


@dataclass(frozen=True)
class Event:
    """One entry of a job stream."""

    kind: EventKind
    fields: dict[str, Any] = field(default_factory=dict)
    ts: float = field(default_factory=time.time)
    id: str = ""  # the stream id, set when read back

    def to_wire(self) -> dict[str, str]:
        allowed = EVENT_FIELDS[self.kind]
        unknown = set(self.fields) - set(allowed)
        if unknown:
            raise ValueError(f"{self.kind.value} events carry no field(s) {sorted(unknown)}")
        wire = {"v": str(PROTOCOL_VERSION), "kind": self.kind.value, "ts": f"{self.ts:.6f}"}
        for name, value in self.fields.items():
            if value is None:
                continue
            wire[name] = json.dumps(value) if name in JSON_FIELDS else str(value)
        return wire

    @classmethod
    def from_wire(cls, entry_id: str, wire: dict[str, str]) -> Event:
        kind = EventKind(wire["kind"])
        fields: dict[str, Any] = {}
        for name in EVENT_FIELDS[kind]:
            if name in wire:
                fields[name] = json.loads(wire[name]) if name in JSON_FIELDS else wire[name]
        return cls(kind=kind, fields=fields, ts=float(wire.get("ts", 0.0)), id=entry_id)


@dataclass(frozen=True)
class Keys:
    """Every Redis key name of the project, under one prefix."""

    prefix: str = "jc"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def events(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:events"

    def cancel(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:cancel"

    def job_objects(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}:objects"

    def job_objects_pattern(self) -> str:
        """A SCAN pattern that matches the object sets of every job."""
        return f"{self.prefix}:job:*:objects"

    def owner_jobs(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}:jobs"

    def worker(self, hostname: str) -> str:
        return f"{self.prefix}:worker:{hostname}"

    def queue_workers(self, queue: str) -> str:
        return f"{self.prefix}:queue:{queue}:workers"

    def reader(self, reader_id: str) -> str:
        return f"{self.prefix}:reader:{reader_id}"

    def schedule(self, owner: str, name: str) -> str:
        return f"{self.prefix}:schedule:{owner}:{name}"

    def owner_schedules(self, owner: str) -> str:
        return f"{self.prefix}:owner:{owner}:schedules"

    def schedule_runs(self, owner: str, name: str) -> str:
        return f"{self.prefix}:schedule:{owner}:{name}:runs"

    def schedule_running(self, owner: str, name: str) -> str:
        return f"{self.prefix}:schedule:{owner}:{name}:running"

    def run(self, run_id: str) -> str:
        return f"{self.prefix}:run:{run_id}"

    def beat_prefix(self) -> str:
        """RedBeat's key prefix: an entry is the prefix followed by the entry's name."""
        return f"{self.prefix}:beat:"

    def beat_entry_name(self, owner: str, name: str) -> str:
        return f"{owner}:{name}"

    def beat_entry(self, owner: str, name: str) -> str:
        return self.beat_prefix() + self.beat_entry_name(owner, name)

    def beat_schedule(self) -> str:
        """RedBeat's zset of entries by due time (RedBeat derives it from the prefix)."""
        return self.beat_prefix() + ":schedule"

    def beat_lock(self) -> str:
        return self.beat_prefix() + ":lock"

    def pattern(self) -> str:
        """A SCAN pattern that matches every key of the project."""
        return f"{self.prefix}:*"


# Metadata carried by every stored object: the owner, the job that first wrote it (empty for a dataset),
# its role (input, output, dataset) and its creation time (seconds since the epoch). Datasets add
# their shape, kind (dataframe, series, table) and digest.
OBJECT_METADATA = ("owner", "job", "role", "created")
DATASET_METADATA = ("rows", "columns", "kind", "digest")
DATASET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class StoreKeys:
    """Every object-store key of the project (see the layout in this module's docstring)."""

    OBJECTS = "objects"
    DATASETS = "datasets"
    DATASET_EXT = "parquet"

    @classmethod
    def object(cls, owner: str, digest: str, ext: str) -> str:
        return f"{owner}/{cls.OBJECTS}/{digest[:2]}/{digest}.{ext}"

    @classmethod
    def dataset(cls, owner: str, name: str) -> str:
        return f"{owner}/{cls.DATASETS}/{name}.{cls.DATASET_EXT}"

    @classmethod
    def datasets_prefix(cls, owner: str) -> str:
        return f"{owner}/{cls.DATASETS}/"

    @classmethod
    def is_job_object(cls, key: str) -> bool:
        """Whether ``key`` is a job object (what ``gc`` may collect), as opposed to a dataset or anything else."""
        parts = key.split("/")
        return len(parts) == 4 and parts[1] == cls.OBJECTS

    @classmethod
    def dataset_name(cls, key: str) -> str | None:
        """The dataset name of a dataset key, else None."""
        parts = key.split("/")
        suffix = "." + cls.DATASET_EXT
        if len(parts) == 3 and parts[1] == cls.DATASETS and parts[2].endswith(suffix):
            return parts[2][: -len(suffix)]
        return None


def check_dataset_name(name: str) -> str:
    """``name`` if it can name a dataset (letters, digits, . _ -), else a ValueError saying why."""
    if not isinstance(name, str) or not DATASET_NAME_RE.fullmatch(name):
        raise ValueError(
            f"dataset names are 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit; got {name!r}"
        )
    return name


def new_job_id() -> str:
    """A job id, generated client-side; it is also the Celery task id."""
    return uuid.uuid4().hex


def environment_fingerprint() -> dict[str, str]:
    """What a worker needs to know to judge whether it can load the kernel's pickles."""
    import cloudpickle

    return {
        "python": platform.python_version(),
        "cloudpickle": cloudpickle.__version__,
        "platform": sys.platform,
    }


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


def schedule_notebook_path(owner: str, name: str, digest: str) -> str:
    """The store key of one uploaded version of a schedule's notebook."""
    return f"{owner}/schedules/{name}/notebooks/{digest}.ipynb"


def run_output_path(owner: str, name: str, run_id: str, filename: str) -> str:
    """The store key of a file a run produced (``output.ipynb``, ``output.html``)."""
    return f"{owner}/schedules/{name}/runs/{run_id}/{filename}"


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
