"""The history of a schedule's runs, and the lock that keeps two runs of a schedule apart.

Run records live in the broker's Redis (durable), one hash per run, indexed per schedule; the
last :data:`HISTORY_LIMIT` runs of a schedule are kept. The queueing side (registry, beat)
creates a record, the worker updates it as the run starts, retries and ends.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Any

import redis

from jupyter_celery.core.events import REDIS_ERRORS, unreachable
from jupyter_celery.core.protocol import Keys

HISTORY_LIMIT = 100
# Run states: the job states, plus "skipped" for a run that found the previous one still running.
FINISHED = frozenset({"succeeded", "failed", "skipped", "cancelled", "lost"})
RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class RunRecord:
    """One run of a schedule.

    ``failed_cell`` is the index (from 0) of the failing cell in the schedule's notebook, and
    ``error`` its ``Type: message``; ``output_notebook`` and ``output_html`` are store keys
    (a failed run's notebook holds the outputs up to the error).
    """

    id: str
    owner: str
    schedule: str
    trigger: str = "manual"
    state: str = "queued"
    queued: float = 0.0
    started: float | None = None
    ended: float | None = None
    attempt: int = 0
    worker: str = ""
    notebook_key: str = ""
    output_notebook: str = ""
    output_html: str = ""
    failed_cell: int | None = None
    error: str = ""
    reason: str = ""
    traceback: str = ""

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (None until both are known)."""
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_hash(self) -> dict[str, str]:
        return {k: "" if v is None else str(v) for k, v in asdict(self).items()}

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> RunRecord:
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = data.get(f.name)
            if raw is None:
                continue
            if f.name in ("queued",):
                values[f.name] = float(raw or 0)
            elif f.name in ("started", "ended"):
                values[f.name] = float(raw) if raw else None
            elif f.name == "attempt":
                values[f.name] = int(raw or 0)
            elif f.name == "failed_cell":
                values[f.name] = int(raw) if raw else None
            else:
                values[f.name] = raw
        return cls(**values)


class RunLog:
    """Reads and writes run records and overlap locks in one Redis (the broker's)."""

    def __init__(self, client: redis.Redis, keys: Keys, url: str = "") -> None:
        self.redis = client
        self.keys = keys
        self.url = url
        self._release = client.register_script(RELEASE_SCRIPT)

    def execute(self, pipe: Any) -> list[Any]:
        """Run a pipeline on this Redis; an unreachable Redis is :class:`ConnectionFailed`."""
        try:
            return list(pipe.execute())
        except REDIS_ERRORS as exc:
            raise unreachable(self.url, exc) from exc

    def create(self, run: RunRecord) -> None:
        """Record a queued run and drop the oldest runs beyond :data:`HISTORY_LIMIT`."""
        index = self.keys.schedule_runs(run.owner, run.schedule)
        try:
            old: Any = self.redis.zrange(index, 0, -HISTORY_LIMIT)
        except REDIS_ERRORS as exc:
            raise unreachable(self.url, exc) from exc
        pipe: Any = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.run(run.id), mapping=run.to_hash())
        pipe.zadd(index, {run.id: run.queued})
        if old:
            pipe.zrem(index, *old)
            pipe.delete(*(self.keys.run(r) for r in old))
        self.execute(pipe)

    def update(self, run_id: str, **values: Any) -> None:
        """Set fields of a run's record (``None`` clears a field)."""
        mapping = {k: "" if v is None else str(v) for k, v in values.items()}
        pipe: Any = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.run(run_id), mapping=mapping)
        self.execute(pipe)

    def finish(self, run_id: str, state: str, **values: Any) -> None:
        """Record how a run ended."""
        self.update(run_id, state=state, ended=values.pop("ended", None) or time.time(), **values)

    def get(self, run_id: str) -> RunRecord | None:
        data: Any = self.redis.hgetall(self.keys.run(run_id))
        return RunRecord.from_hash(data) if data else None

    def recent(self, owner: str, schedule: str, limit: int = 20) -> list[RunRecord]:
        """The schedule's most recent runs, newest first."""
        ids: Any = self.redis.zrevrange(self.keys.schedule_runs(owner, schedule), 0, max(0, limit - 1))
        pipe = self.redis.pipeline(transaction=False)
        for run_id in ids:
            pipe.hgetall(self.keys.run(run_id))
        return [RunRecord.from_hash(data) for data in self.execute(pipe) if data]

    def forget(self, owner: str, schedule: str) -> None:
        """Remove a schedule's whole history."""
        index = self.keys.schedule_runs(owner, schedule)
        ids: Any = self.redis.zrange(index, 0, -1)
        self.redis.delete(index, *(self.keys.run(r) for r in ids))

    def acquire(self, owner: str, schedule: str, run_id: str, ttl: float) -> str | None:
        """Take the schedule's overlap lock for ``run_id``; return the holder's run id if another run has it."""
        key = self.keys.schedule_running(owner, schedule)
        if self.redis.set(key, run_id, nx=True, px=max(1, int(ttl * 1000))):
            return None
        holder: Any = self.redis.get(key)
        if holder is None or holder == run_id:  # it expired meanwhile, or it is ours (a retry)
            return self.acquire(owner, schedule, run_id, ttl) if holder is None else None
        return str(holder)

    def release(self, owner: str, schedule: str, run_id: str) -> None:
        """Give the overlap lock back, if ``run_id`` still holds it."""
        self._release(keys=[self.keys.schedule_running(owner, schedule)], args=[run_id])
