"""The wire contract: queue and task names, Redis and store key names, event kinds and schemas.

This is the only module that formats a key or names a task. The kernel side sends tasks by
these names (with the messages of :mod:`jupyter_celery.core.messages`); the worker side registers
its implementations under them.

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
import re
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

PROTOCOL_VERSION = 1

PYTHON_Q = "python_q"
CIRCUIT_Q = "circuit_q"
QUEUES: tuple[str, ...] = (PYTHON_Q, CIRCUIT_Q)
DEFAULT_QUEUE = PYTHON_Q

TASK_NAMESPACE = "jupyter_celery."  # every task name of ours starts with it
TASK_RUN_CELL = TASK_NAMESPACE + "run_cell"
TASK_ECHO = TASK_NAMESPACE + "echo"  # a trivial task: the raw-Celery anchor of the benchmarks
TASK_RUN_NOTEBOOK = TASK_NAMESPACE + "run_notebook"  # one run of a scheduled notebook (papermill)
TASK_RUN_FUNCTION = TASK_NAMESPACE + "run_function"  # a function call (submit) or a chunk of a map

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


def schedule_notebook_path(owner: str, name: str, digest: str) -> str:
    """The store key of one uploaded version of a schedule's notebook."""
    return f"{owner}/schedules/{name}/notebooks/{digest}.ipynb"


def run_output_path(owner: str, name: str, run_id: str, filename: str) -> str:
    """The store key of a file a run produced (``output.ipynb``, ``output.html``)."""
    return f"{owner}/schedules/{name}/runs/{run_id}/{filename}"
