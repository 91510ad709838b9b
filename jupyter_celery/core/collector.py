"""``jupyter-celery gc``: delete the job objects that no job refers to any more.

**What keeps an object.** Job objects are content-addressed (:mod:`jupyter_celery.core.objects`):
one object may serve many jobs, and the job id in its metadata is only the first job that wrote
it. So an object is *referenced* while any job still on record lists it in its objects set
(``<p>:job:<id>:objects`` in Redis): the kernel adds a job's input keys when it creates the job,
the worker adds its output keys with the terminal event, and the set expires with the job's
record, ``JUPYTER_CELERY_JOB_TTL`` after the job's last event. A queued or running job, or one that
ended recently, therefore keeps its objects; a re-submission of old data refers to the old
object again and keeps it too.

**What is deleted.** A job object (``<owner>/objects/...``) that no job refers to *and* was
written more than ``--older-than`` ago. Named datasets (``<owner>/datasets/...``) and anything
else in the store are never deleted. Partial writes left behind by an interrupted writer (the
local store's staging area) older than the same age are removed too.

**A race, and why it is harmless.** The references are read again just before deleting, so a job
that starts to use an old object during the run keeps it, except in the moment between that
last read and the delete: such a job fails with a clear "object missing" error and can simply
be submitted again.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from jupyter_celery.core.datasets import human_size
from jupyter_celery.core.protocol import StoreKeys
from jupyter_celery.core.store import ObjectInfo, Store

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (or combined: ``1d12h``)."""
    compact = text.strip().lower().replace(" ", "")
    parts = DURATION_RE.findall(compact)
    if not parts or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"not a duration: {text!r} (examples: 90s, 30m, 12h, 7d, 2w)")
    return sum(float(n) * UNITS[u] for n, u in parts)


@dataclass
class Tally:
    """A number of objects and their total size."""

    count: int = 0
    size: int = 0

    def add(self, info: ObjectInfo) -> None:
        self.count += 1
        self.size += info.size

    def __str__(self) -> str:
        return f"{self.count} object(s), {human_size(self.size)}"


@dataclass
class Collection:
    """What one run of ``gc`` found, and deleted (or would have, with ``dry_run``)."""

    store: str
    older_than: float
    dry_run: bool
    job_objects: Tally = field(default_factory=Tally)
    referenced: Tally = field(default_factory=Tally)
    recent: Tally = field(default_factory=Tally)
    collected: Tally = field(default_factory=Tally)
    datasets: Tally = field(default_factory=Tally)
    partial: Tally = field(default_factory=Tally)
    deleted_keys: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        age = _age(self.older_than)
        verb = "would delete" if self.dry_run else "deleted"
        rows = [
            ("job objects", str(self.job_objects)),
            ("kept, used by a job", str(self.referenced)),
            (f"kept, newer than {age}", str(self.recent)),
            (verb, f"{self.collected} (unreferenced, older than {age})"),
            ("named datasets", f"{self.datasets} (never deleted)"),
        ]
        if self.partial.count:
            rows.append((f"partial writes, {verb}", str(self.partial)))
        width = max(len(label) for label, _ in rows) + 1
        lines = [f"store {self.store}", *(f"  {label + ':':<{width}} {value}" for label, value in rows)]
        if self.dry_run:
            lines.append("dry run: nothing was deleted")
        return lines


def _age(seconds: float) -> str:
    for unit in ("d", "h", "m"):
        if seconds >= UNITS[unit] and seconds % UNITS[unit] == 0:
            return f"{int(seconds // UNITS[unit])}{unit}"
    return f"{seconds:g}s"


def collect(
    store: Store,
    references: Callable[[], set[str]],
    older_than: float,
    *,
    dry_run: bool = False,
    owner: str | None = None,
    now: float | None = None,
) -> Collection:
    """Delete job objects of ``store`` that ``references()`` does not list and that are older than ``older_than`` s.

    ``owner`` limits the run to one owner's objects. See the module docstring for the rules.
    """
    cutoff = (time.time() if now is None else now) - older_than
    result = Collection(store.describe(), older_than, dry_run)
    candidates: list[ObjectInfo] = []
    listed = list(store.objects(f"{owner}/" if owner else ""))
    referenced = references()  # read after listing: a job created meanwhile is seen
    for info in listed:
        if StoreKeys.dataset_name(info.key) is not None:
            result.datasets.add(info)
        elif StoreKeys.is_job_object(info.key):
            result.job_objects.add(info)
            if info.key in referenced:
                result.referenced.add(info)
            elif info.modified > cutoff:
                result.recent.add(info)
            else:
                candidates.append(info)
    if not dry_run and candidates:
        still = references()  # once more, just before deleting
        kept = [c for c in candidates if c.key in still]
        for info in kept:
            result.referenced.add(info)
        candidates = [c for c in candidates if c.key not in still]
        store.delete_many(c.key for c in candidates)
    for info in candidates:
        result.collected.add(info)
    result.deleted_keys = [] if dry_run else [c.key for c in candidates]
    for info in store.partial_writes(cutoff, delete=not dry_run):
        result.partial.add(info)
    return result
