"""Job records and job streams in Redis: writing events and reading them back.

A job's stream ends with exactly one terminal event. Appends go through one Lua script that adds
the events (``XADD ... MAXLEN ~ N``), updates the job record, adds the store keys the job now
refers to (``SADD`` to its objects set: what keeps them from ``gc``), refreshes the TTL of all
three, and drops anything written after the job has ended: a second terminal event (the worker's ``failed``
racing the kernel's ``lost``, a re-delivered job running again) never reaches readers.

Readers pass the last id they saw, starting from ``0-0``, never ``$``: a job that ended before its
reader started is still seen.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jupyter_celery.core.errors import ConnectionFailed
from jupyter_celery.core.protocol import STATE_BY_KIND, Event, EventKind, Keys
from jupyter_celery.core.settings import Settings, redact_url

START_ID = "0-0"
REDIS_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)
READER_STREAM_MAXLEN = 100

# KEYS: stream, record, objects set. ARGV: maxlen, ttl, n_events, n_objects, the objects, then per
# event: terminal (0/1), seq (0: none), n_fields, field, value, ...; then the record update as
# field, value, ...
# An event is dropped (id "") when the job has ended, or when its seq is not above the last seq
# written (a retried write whose first attempt did land). Returns the ids.
_APPEND = """
local state = redis.call('HMGET', KEYS[2], 'ended', 'seq')
local ended = state[1] ~= false
local last_seq = tonumber(state[2] or '0')
local maxlen, ttl, n, n_objects = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local i, ids, wrote = 5 + n_objects, {}, false
local was_open = not ended
for e = 1, n do
  local terminal, seq, nf = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
  local fields = {}
  for f = 0, 2 * nf - 1 do fields[#fields + 1] = ARGV[i + 3 + f] end
  i = i + 3 + 2 * nf
  if ended or (seq > 0 and seq <= last_seq) then
    ids[#ids + 1] = ''
  else
    ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(fields))
    wrote = true
    if seq > 0 then last_seq = seq end
    if terminal == '1' then ended = true end
  end
end
if was_open and wrote then
  if i <= #ARGV then redis.call('HSET', KEYS[2], unpack(ARGV, i)) end
  if last_seq > 0 then redis.call('HSET', KEYS[2], 'seq', string.format('%d', last_seq)) end
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[2], ttl)
  if n_objects > 0 then
    redis.call('SADD', KEYS[3], unpack(ARGV, 5, 4 + n_objects))
    redis.call('EXPIRE', KEYS[3], ttl)
  end
end
return ids
"""


# KEYS: owner index, record, stream, objects set. ARGV: submitted (score), job id, ttl, trim cutoff,
# maxlen, n_record_fields, field, value..., n_event_fields, field, value..., n_objects, objects...
# One script rather than a MULTI of ten commands: measured ~100 us less per submit. The record's
# state is set only if no event set it first (see EventLog.start_create: the create may land after
# the worker's first events when the events Redis is not the broker's).
_CREATE = """
local ttl = ARGV[3]
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[4])
redis.call('EXPIRE', KEYS[1], ttl)
local i = 6
local nr = tonumber(ARGV[i])
for f = i + 1, i + 2 * nr, 2 do
  if ARGV[f] == 'state' or ARGV[f] == 'updated' then
    redis.call('HSETNX', KEYS[2], ARGV[f], ARGV[f + 1])
  else
    redis.call('HSET', KEYS[2], ARGV[f], ARGV[f + 1])
  end
end
redis.call('EXPIRE', KEYS[2], ttl)
i = i + 1 + 2 * nr
local ne = tonumber(ARGV[i])
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, i + 1, i + 2 * ne))
redis.call('EXPIRE', KEYS[3], ttl)
i = i + 1 + 2 * ne
local no = tonumber(ARGV[i])
if no > 0 then
  redis.call('SADD', KEYS[4], unpack(ARGV, i + 1, i + no))
  redis.call('EXPIRE', KEYS[4], ttl)
end
return id
"""


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
            if event.kind is not EventKind.SUCCEEDED:
                update["reason"] = str(event.fields.get("message") or event.fields.get("reason") or "")
    return update


class EventLog:
    """Reads and writes the job records, owner indexes and job streams of one Redis."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.keys = Keys(settings.key_prefix)
        self.maxlen = settings.stream_maxlen
        self.ttl = settings.job_ttl
        self.url = settings.events_url
        self._append = client.register_script(_APPEND)
        self._create = client.register_script(_CREATE)
        with contextlib.suppress(*REDIS_ERRORS):
            client.script_load(_CREATE)  # so start_create can send EVALSHA straight away

    @classmethod
    def connect(cls, settings: Settings, *, block_seconds: float = 0.0) -> EventLog:
        return cls(connect_redis(settings.events_url, block_seconds=block_seconds), settings)

    def _create_call(
        self, job_id: str, record: Mapping[str, str], queued: Event, objects: Sequence[str]
    ) -> tuple[list[str], list[Any]]:
        fields = {**record, **record_update([queued])}
        wire = queued.to_wire()
        argv: list[Any] = [float(record["submitted"]), job_id, self.ttl, time.time() - self.ttl, self.maxlen]
        argv += [len(fields), *(x for kv in fields.items() for x in kv)]
        argv += [len(wire), *(x for kv in wire.items() for x in kv)]
        argv += [len(objects), *objects]
        keys = [
            self.keys.owner_jobs(record["owner"]),
            self.keys.job(job_id),
            self.keys.events(job_id),
            self.keys.job_objects(job_id),
        ]
        return keys, argv

    def create(self, job_id: str, record: Mapping[str, str], queued: Event, objects: Sequence[str] = ()) -> Event:
        """Write a new job's record, index it under its owner and add its ``queued`` event, atomically.

        ``objects`` are the store keys of its inputs: from now on ``gc`` keeps them. Returns the
        ``queued`` event with its stream id.
        """
        keys, argv = self._create_call(job_id, record, queued, objects)
        try:
            entry_id: Any = self._create(keys=keys, args=argv)
        except REDIS_ERRORS as exc:
            raise unreachable(self.url, exc) from exc
        return Event(queued.kind, queued.fields, queued.ts, id=str(entry_id))

    def start_create(
        self, job_id: str, record: Mapping[str, str], queued: Event, objects: Sequence[str] = ()
    ) -> Callable[[], Event]:
        """:meth:`create`, sent now and read later: the caller does other work (sending the task)
        while Redis runs it. Returns the function that waits for it and returns the ``queued``
        event with its id (raising :class:`ConnectionFailed` if it failed).

        Sent first, it runs before a task published afterwards reaches a worker through the same
        Redis; through another Redis, the worker's first events may come first, which the script
        allows (it never sets the record's state back to ``queued``).
        """
        keys, argv = self._create_call(job_id, record, queued, objects)
        pool = self.redis.connection_pool
        try:
            connection = pool.get_connection()
        except REDIS_ERRORS as exc:
            raise unreachable(self.url, exc) from exc
        try:
            connection.send_command("EVALSHA", self._create.sha, len(keys), *keys, *argv)  # type: ignore[no-untyped-call]
        except REDIS_ERRORS as exc:
            pool.release(connection)
            raise unreachable(self.url, exc) from exc

        def finish() -> Event:
            try:
                entry_id: Any = connection.read_response()
            except NoScriptError:  # a restarted Redis forgot the script: run it the normal way
                pool.release(connection)
                return self.create(job_id, record, queued, objects)
            except REDIS_ERRORS as exc:
                connection.disconnect()  # type: ignore[no-untyped-call]
                pool.release(connection)
                raise unreachable(self.url, exc) from exc
            pool.release(connection)
            return Event(queued.kind, queued.fields, queued.ts, id=str(entry_id))

        return finish

    def append(
        self, job_id: str, *events: Event, seqs: Sequence[int] | None = None, objects: Sequence[str] = ()
    ) -> list[str]:
        """Add events to a job's stream, their state to its record and ``objects`` to its store keys,
        in one atomic step.

        ``seqs`` (increasing numbers, one per event) make the append idempotent: an event whose
        number was already written is skipped, so retrying a write whose reply was lost does not
        duplicate it. Returns the stream ids; a dropped event (the job had already ended, or a
        repeat) has the id ``""``.
        """
        numbers = list(seqs) if seqs is not None else [0] * len(events)
        argv: list[Any] = [self.maxlen, self.ttl, len(events), len(objects), *objects]
        for event, seq in zip(events, numbers, strict=True):
            wire = event.to_wire()
            argv += ["1" if event.kind.terminal else "0", seq, len(wire)]
            for name, value in wire.items():
                argv += [name, value]
        for name, value in record_update(events).items():
            argv += [name, value]
        try:
            keys = [self.keys.events(job_id), self.keys.job(job_id), self.keys.job_objects(job_id)]
            ids: Any = self._append(keys=keys, args=argv)
        except REDIS_ERRORS as exc:
            raise unreachable(self.url, exc) from exc
        return [str(i) for i in ids]

    def _execute(self, pipe: Any) -> list[Any]:
        try:
            return list(pipe.execute())
        except REDIS_ERRORS as exc:
            raise unreachable(self.url, exc) from exc

    def read_streams(self, streams: Mapping[str, str], block_seconds: float) -> list[tuple[str, str, dict[str, str]]]:
        """Raw ``XREAD BLOCK`` over several streams: (stream key, entry id, fields) in order."""
        reply: Any = self.redis.xread(dict(streams), block=max(1, int(block_seconds * 1000)))  # type: ignore[arg-type]
        return [(stream, entry_id, wire) for stream, entries in reply or [] for entry_id, wire in entries]

    def read(self, positions: Mapping[str, str], block_seconds: float) -> list[tuple[str, Event]]:
        """New events of several jobs, blocking up to ``block_seconds`` when there are none.

        ``positions`` maps job ids to the last stream id seen (``START_ID`` for a new reader).
        """
        if not positions:
            return []
        by_stream = {self.keys.events(job_id): job_id for job_id in positions}
        streams = {self.keys.events(job_id): last for job_id, last in positions.items()}
        return [
            (by_stream[stream], Event.from_wire(entry_id, wire))
            for stream, entry_id, wire in self.read_streams(streams, block_seconds)
        ]

    def history(self, job_id: str) -> list[Event]:
        """Every event of a job still on its stream, oldest first."""
        entries: Any = self.redis.xrange(self.keys.events(job_id))
        return [Event.from_wire(i, w) for i, w in entries]

    def record(self, job_id: str) -> dict[str, str]:
        """The job record (empty when the job is unknown or expired)."""
        record: Any = self.redis.hgetall(self.keys.job(job_id))
        return dict(record)

    def records(self, job_ids: Iterable[str]) -> list[dict[str, str]]:
        """The records of several jobs in one round trip (empty dicts for unknown ones)."""
        pipe = self.redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hgetall(self.keys.job(job_id))
        return [dict(r) for r in self._execute(pipe)]

    def owner_jobs(self, owner: str, limit: int = 50) -> list[str]:
        """The owner's most recent job ids, newest first."""
        ids: Any = self.redis.zrevrange(self.keys.owner_jobs(owner), 0, limit - 1)
        return list(ids)

    def ended(self, job_id: str) -> str | None:
        """The final state of a job that has ended (None while it has not)."""
        reply: Any = self.redis.hmget(self.keys.job(job_id), ["state", "ended"])
        state, ended = reply
        return str(state) if ended else None

    def request_cancel(self, job_id: str) -> None:
        """Record that the job was asked to stop (the worker running it watches this key)."""
        try:
            self.redis.set(self.keys.cancel(job_id), f"{time.time():.6f}", ex=self.ttl)
        except REDIS_ERRORS as exc:
            raise unreachable(self.url, exc) from exc

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.redis.exists(self.keys.cancel(job_id)))

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
        """Remove records, streams, cancel flags and object sets (used by tests and clean-up)."""
        keys = [
            k
            for j in job_ids
            for k in (self.keys.job(j), self.keys.events(j), self.keys.cancel(j), self.keys.job_objects(j))
        ]
        if keys:
            self.redis.delete(*keys)
