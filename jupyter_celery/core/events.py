"""Job records and job streams in Redis: writing events and reading them back.

Every write of an event is one MULTI/EXEC: ``XADD ... MAXLEN ~ N`` on the job's stream, the job
record's state when the event changes it, the store keys the job refers to (``SADD`` to its
objects set) when there are new ones, and ``EXPIRE`` on all three (the TTL is refreshed on every
write). Readers pass the last id they saw, starting from ``0-0``, never ``$``: a job that ended
before its reader started is still seen.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jupyter_celery.core.errors import ConnectionFailed
from jupyter_celery.core.protocol import STATE_BY_KIND, Event, EventKind, Keys
from jupyter_celery.core.settings import Settings, redact_url

START_ID = "0-0"
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


def connect_redis(url: str, *, block_seconds: float = 0.0) -> redis.Redis:
    """A Redis client for ``url``. A client that blocks sets its socket timeout above the block time."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=block_seconds + 5.0,
        socket_connect_timeout=5.0,
        health_check_interval=30,
        retry_on_timeout=False,
    )


def unreachable(url: str, exc: BaseException) -> ConnectionFailed:
    return ConnectionFailed(f"cannot reach Redis at {redact_url(url)}: {exc}")


class EventLog:
    """Reads and writes the job records, owner indexes and job streams of one Redis."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.keys = Keys(settings.key_prefix)
        self.maxlen = settings.stream_maxlen
        self.ttl = settings.job_ttl
        self.url = settings.events_url

    @classmethod
    def connect(cls, settings: Settings, *, block_seconds: float = 0.0) -> EventLog:
        return cls(connect_redis(settings.events_url, block_seconds=block_seconds), settings)

    @staticmethod
    def record_update(events: Iterable[Event]) -> dict[str, str]:
        """The job-record fields that ``events`` change (state, timestamps, worker)."""
        update: dict[str, str] = {}
        for event in events:
            state = STATE_BY_KIND.get(event.kind)
            if state is None:
                continue
            ts = f"{event.ts:.6f}"
            update.update(state=state, updated=ts)
            if event.kind is EventKind.STARTED:
                update.update(started=ts, worker=str(event.fields.get("worker", "")))
            elif event.kind.terminal:
                update["ended"] = ts
        return update

    def _add(
        self, pipe: Any, job_id: str, events: Iterable[Event], record: Mapping[str, str], objects: Sequence[str]
    ) -> int:
        """Queue the writes of ``events``, the record's update and ``objects``; return the first XADD's index."""
        stream = self.keys.events(job_id)
        index = len(pipe.command_stack)
        for event in events:
            pipe.xadd(stream, event.to_wire(), maxlen=self.maxlen, approximate=True)
        pipe.expire(stream, self.ttl)
        key = self.keys.job(job_id)
        if record:
            pipe.hset(key, mapping=dict(record))
        pipe.expire(key, self.ttl)
        objects_key = self.keys.job_objects(job_id)
        if objects:
            pipe.sadd(objects_key, *objects)
        pipe.expire(objects_key, self.ttl)  # the job's objects are kept as long as its record
        return index

    def create(self, job_id: str, record: Mapping[str, str], queued: Event, objects: Sequence[str] = ()) -> Event:
        """Write a new job's record, index it under its owner and add its first event (returned with its id).

        ``objects`` are the store keys of its inputs: from now on ``gc`` keeps them.
        """
        pipe = self.redis.pipeline(transaction=True)
        owner_index = self.keys.owner_jobs(record["owner"])
        pipe.zadd(owner_index, {job_id: float(record["submitted"])})
        pipe.zremrangebyscore(owner_index, "-inf", time.time() - self.ttl)
        pipe.expire(owner_index, self.ttl)
        index = self._add(pipe, job_id, [queued], {**record, **self.record_update([queued])}, objects)
        replies = self._execute(pipe)
        return Event(queued.kind, queued.fields, queued.ts, id=str(replies[index]))

    def append(self, job_id: str, *events: Event, objects: Sequence[str] = ()) -> None:
        """Add events to a job's stream (their state to its record, ``objects`` to its keys) in one transaction."""
        pipe = self.redis.pipeline(transaction=True)
        self._add(pipe, job_id, events, self.record_update(events), objects)
        self._execute(pipe)

    def _execute(self, pipe: Any) -> list[Any]:
        try:
            return list(pipe.execute())
        except REDIS_ERRORS as exc:
            raise unreachable(self.url, exc) from exc

    def read(self, positions: Mapping[str, str], block_seconds: float) -> list[tuple[str, Event]]:
        """New events of several jobs, blocking up to ``block_seconds`` when there are none.

        ``positions`` maps job ids to the last stream id seen (``START_ID`` for a new reader).
        """
        if not positions:
            return []
        streams = {self.keys.events(job_id): last for job_id, last in positions.items()}
        by_stream = {self.keys.events(job_id): job_id for job_id in positions}
        reply: Any = self.redis.xread(streams, block=max(1, int(block_seconds * 1000)))  # type: ignore[arg-type]
        out: list[tuple[str, Event]] = []
        for stream, entries in reply or []:
            job_id = by_stream[stream]
            for entry_id, wire in entries:
                out.append((job_id, Event.from_wire(entry_id, wire)))
        return out

    def history(self, job_id: str) -> list[Event]:
        """Every event of a job still on its stream, oldest first."""
        entries: Any = self.redis.xrange(self.keys.events(job_id))
        return [Event.from_wire(i, w) for i, w in entries]

    def record(self, job_id: str) -> dict[str, str]:
        """The job record (empty when the job is unknown or expired)."""
        record: Any = self.redis.hgetall(self.keys.job(job_id))
        return dict(record)

    def owner_jobs(self, owner: str, limit: int = 50) -> list[str]:
        """The owner's most recent job ids, newest first."""
        ids: Any = self.redis.zrevrange(self.keys.owner_jobs(owner), 0, limit - 1)
        return list(ids)

    def job_objects(self, job_id: str) -> set[str]:
        """The store keys a job refers to."""
        members: Any = self.redis.smembers(self.keys.job_objects(job_id))
        return set(members)

    def referenced_objects(self) -> set[str]:
        """The store keys every job still on record refers to (what ``gc`` must keep)."""
        found: set[str] = set()
        names = list(self.redis.scan_iter(self.keys.job_objects_pattern(), count=1000))
        for start in range(0, len(names), 500):
            pipe = self.redis.pipeline(transaction=False)
            for name in names[start : start + 500]:
                pipe.smembers(name)
            for members in pipe.execute():
                found.update(members)
        return found

    def delete_all(self, job_ids: Iterable[str]) -> None:
        """Remove records, streams and object sets (used by tests and clean-up)."""
        keys = [k for j in job_ids for k in (self.keys.job(j), self.keys.events(j), self.keys.job_objects(j))]
        if keys:
            self.redis.delete(*keys)
