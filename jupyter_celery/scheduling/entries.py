"""Schedules as RedBeat entries: how beat sees them, stored in Redis beside the registry.

An entry holds only what beat needs: the timing (a Celery interval, or a :class:`CronSchedule`
with its timezone), whether it is enabled, and the schedule's owner and name as arguments. At
each due time the beat scheduler (:mod:`jupyter_celery.scheduling.beat`) reads the schedule
from the registry and queues a run; so a change to a schedule applies at its next run.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from celery import Celery
from celery.schedules import schedule as interval_schedule
from redbeat.decoder import RedBeatJSONDecoder, RedBeatJSONEncoder, from_timestamp
from redbeat.schedulers import RedBeatSchedulerEntry, get_redis

from jupyter_celery.core.protocol import TASK_RUN_NOTEBOOK, Keys
from jupyter_celery.core.settings import Settings
from jupyter_celery.scheduling.model import ScheduleSpec
from jupyter_celery.scheduling.timing import CronSchedule

DEFAULT_MAX_INTERVAL = 5.0  # seconds between two looks of beat at the schedules
CRON_TYPE = "jupyter_celery.cron"


class _Encoder(RedBeatJSONEncoder):  # type: ignore[misc]
    def default(self, o: Any) -> Any:
        if isinstance(o, CronSchedule):
            return {"__type__": CRON_TYPE, "expression": o.expression, "timezone": o.timezone}
        return super().default(o)


class _Decoder(RedBeatJSONDecoder):  # type: ignore[misc]
    def dict_to_object(self, d: dict[str, Any]) -> Any:
        if d.get("__type__") == CRON_TYPE:
            return CronSchedule(d["expression"], d["timezone"])
        return super().dict_to_object(d)


class NotebookEntry(RedBeatSchedulerEntry):  # type: ignore[misc]
    """A RedBeat entry whose schedule may be a :class:`CronSchedule` (cron in a timezone)."""

    @staticmethod
    def decode_definition(definition: str) -> dict[str, Any]:
        decoded: dict[str, Any] = json.loads(definition, cls=_Decoder)
        return decoded

    def save(self) -> NotebookEntry:
        definition = {
            "name": self.name,
            "task": self.task,
            "args": self.args,
            "kwargs": self.kwargs,
            "options": self.options,
            "schedule": self.schedule,
            "enabled": self.enabled,
        }
        meta = {"last_run_at": self.last_run_at}
        with get_redis(self.app).pipeline() as pipe:
            pipe.hset(self.key, "definition", json.dumps(definition, cls=_Encoder))
            pipe.hsetnx(self.key, "meta", json.dumps(meta, cls=RedBeatJSONEncoder))
            pipe.zadd(self.app.redbeat_conf.schedule_key, {self.key: self.score})
            pipe.execute()
        return self


def configure_redbeat(app: Celery, settings: Settings, max_interval: float = DEFAULT_MAX_INTERVAL) -> Celery:
    """Point RedBeat at the broker's Redis (durable) under the project's key names."""
    keys = Keys(settings.key_prefix)
    app.conf.update(
        redbeat_redis_url=settings.broker_url,
        redbeat_key_prefix=keys.beat_prefix(),
        redbeat_lock_key=keys.beat_lock(),
        redbeat_redis_options={"socket_timeout": 10.0, "socket_connect_timeout": 5.0, "retry_period": 60},
        beat_max_loop_interval=max_interval,
    )
    return app


def timing_of(spec: ScheduleSpec, app: Celery) -> Any:
    """The Celery schedule of a spec."""
    if spec.cron is not None:
        return CronSchedule(spec.cron, spec.timezone, app=app)
    return interval_schedule(run_every=spec.every, app=app)


def entry_for(spec: ScheduleSpec, app: Celery, keys: Keys) -> NotebookEntry:
    """The RedBeat entry of a schedule (saving it keeps the time beat last queued a run)."""
    return NotebookEntry(
        name=keys.beat_entry_name(spec.owner, spec.name),
        task=TASK_RUN_NOTEBOOK,
        schedule=timing_of(spec, app),
        args=[spec.owner, spec.name],
        enabled=not spec.paused,
        app=app,
    )


def last_run_at(app: Celery, key: str) -> datetime | None:
    """When beat last queued a run of the entry at ``key`` (None when never, or no entry)."""
    raw = get_redis(app).hget(key, "meta")
    if not raw:
        return None
    value = json.loads(raw, cls=RedBeatJSONDecoder).get("last_run_at")
    if isinstance(value, (int, float)):
        value = from_timestamp(value)
    return value if isinstance(value, datetime) else None
