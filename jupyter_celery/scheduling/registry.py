"""The registry of scheduled notebooks: create, change, pause, run and delete schedules.

Used by the kernel (``jc.schedule_notebook``), the CLI and beat. A schedule is stored twice,
each copy with its own job: the registry's record (the whole definition, see
:class:`ScheduleSpec`) and a RedBeat entry (timing and enabled flag, read by beat). Both live in
the broker's Redis, so they survive a beat restart and, with persistence on, a Redis restart;
beat picks up every change without a restart. A run is queued by :meth:`Registry.dispatch`,
from beat or from :meth:`Registry.run_now`: it records the run and the job (record + ``queued``
event), then sends the notebook-runner task by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from celery import Celery
from kombu.exceptions import OperationalError
from redbeat.schedulers import get_redis

from jupyter_celery.core.app import make_app
from jupyter_celery.core.errors import ConnectionFailed, InvalidSchedule, ScheduleExists, ScheduleNotFound
from jupyter_celery.core.events import EventLog, connect_redis
from jupyter_celery.core.messages import NotebookRunSpec
from jupyter_celery.core.protocol import TASK_RUN_NOTEBOOK, Event, EventKind, Keys, new_job_id, schedule_notebook_path
from jupyter_celery.core.queues import RUN_GRACE, hard_limit
from jupyter_celery.core.settings import Settings, redact_url
from jupyter_celery.core.store import Store, open_store
from jupyter_celery.scheduling.entries import NotebookEntry, configure_redbeat, entry_for, last_run_at
from jupyter_celery.scheduling.model import ScheduleSpec, check_name, name_for
from jupyter_celery.scheduling.notebook import NotebookFile, parse_notebook, read_notebook
from jupyter_celery.scheduling.runs import RunLog, RunRecord
from jupyter_celery.scheduling.timing import CronSchedule, check_timezone, interval_upcoming

FIXED_FIELDS = frozenset({"name", "owner", "notebook_key", "created", "updated"})


@dataclass(frozen=True)
class RunTicket:
    """A queued run: its id (also its job id) and the ``queued`` event of its stream."""

    run_id: str
    queued: Event
    spec: ScheduleSpec


class Registry:
    """The schedules of one Redis, for one owner by default (``settings.owner``)."""

    def __init__(self, settings: Settings, *, app: Celery | None = None) -> None:
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.app = configure_redbeat(app or make_app(settings, name="jupyter_celery.schedules"), settings)
        self.redis = connect_redis(settings.broker_url)
        self.runs = RunLog(self.redis, self.keys, settings.broker_url)
        self.events = EventLog.connect(settings)
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.settings.store_url)
        return self._store

    def _owner(self, owner: str | None) -> str:
        return owner or self.settings.owner

    # -- definitions -------------------------------------------------------------------------

    def create(
        self, notebook: str | Path, *, name: str | None = None, owner: str | None = None, replace: bool = False,
        **options: Any,
    ) -> ScheduleSpec:  # fmt: skip
        """Validate, upload the notebook, save the schedule and its beat entry.

        ``options`` are the fields of :class:`ScheduleSpec` (``cron`` or ``every``, ``timezone``,
        ``parameters``, ``queue``, ``timeout``, ``retries``, ``retry_delay``, ``overlap``,
        ``kernel``, ``paused``). Any invalid value is an :class:`InvalidSchedule` error and nothing
        is saved; an existing name is :class:`ScheduleExists` unless ``replace`` is true.
        """
        file = read_notebook(notebook)
        owner = self._owner(owner)
        name = check_name(name if name is not None else name_for(str(notebook)))
        spec = ScheduleSpec(name=name, owner=owner, notebook=str(notebook), notebook_key="-", **options)
        file.check_parameters(spec.parameters)
        previous = self.find(name, owner)
        if previous is not None and not replace:
            raise ScheduleExists(
                f"a schedule named {name!r} exists already; change it with update(), or pass replace=True"
            )
        if previous is not None:
            spec = spec.changed(created=previous.created)
        return self._save(spec.changed(notebook_key=self._upload(file, owner, name)))

    def update(self, name: str, /, *, owner: str | None = None, notebook: str | Path | None = None,
               **changes: Any) -> ScheduleSpec:  # fmt: skip
        """Change a schedule; ``notebook=`` uploads the notebook again (from that path).

        The name and owner are fixed (create another schedule to rename one); the run history stays.
        """
        fixed = sorted(set(changes) & FIXED_FIELDS)
        if fixed:
            raise InvalidSchedule(f"a schedule's {', '.join(fixed)} cannot change; create another schedule instead")
        spec = self.get(name, owner)
        file: NotebookFile | None = None
        if notebook is not None:
            file = read_notebook(notebook)
            changes["notebook"] = str(notebook)
        changed = spec.changed(**changes)
        if file is None and "parameters" in changes:
            file = parse_notebook(self.store.get(spec.notebook_key), spec.notebook)
        if file is not None:
            file.check_parameters(changed.parameters)
            changed = changed.changed(notebook_key=self._upload(file, spec.owner, spec.name))
        self._save(changed)
        if spec.paused and not changed.paused:
            self._restart_clock(changed)
        return changed

    def _upload(self, file: NotebookFile, owner: str, name: str) -> str:
        key = schedule_notebook_path(owner, name, file.digest)
        if not self.store.exists(key):
            self.store.put(key, file.content)
        return key

    def _save(self, spec: ScheduleSpec) -> ScheduleSpec:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.schedule(spec.owner, spec.name), mapping={"spec": spec.to_json()})
        pipe.sadd(self.keys.owner_schedules(spec.owner), spec.name)
        self.runs.execute(pipe)
        entry_for(spec, self.app, self.keys).save()
        return spec

    def find(self, name: str, owner: str | None = None) -> ScheduleSpec | None:
        raw: Any = self.redis.hget(self.keys.schedule(self._owner(owner), name), "spec")
        return ScheduleSpec.from_json(raw) if raw else None

    def get(self, name: str, owner: str | None = None) -> ScheduleSpec:
        spec = self.find(name, owner)
        if spec is None:
            raise ScheduleNotFound(f"no schedule named {name!r} for {self._owner(owner)}")
        return spec

    def all(self, owner: str | None = None) -> list[ScheduleSpec]:
        """The owner's schedules, by name."""
        names: Any = self.redis.smembers(self.keys.owner_schedules(self._owner(owner)))
        found = (self.find(n, owner) for n in sorted(names))
        return [spec for spec in found if spec is not None]

    def pause(self, name: str, owner: str | None = None) -> ScheduleSpec:
        """Stop queueing runs (``run_now`` still works)."""
        return self._save(self.get(name, owner).changed(paused=True))

    def resume(self, name: str, owner: str | None = None) -> ScheduleSpec:
        """Queue runs again, from the next due time on (runs missed while paused are not caught up)."""
        spec = self._save(self.get(name, owner).changed(paused=False))
        self._restart_clock(spec)
        return spec

    def _restart_clock(self, spec: ScheduleSpec) -> None:
        """Count the next due time from now, so that runs missed while paused are not caught up."""
        NotebookEntry.from_key(self.keys.beat_entry(spec.owner, spec.name), app=self.app).reschedule()

    def delete(self, name: str, owner: str | None = None) -> None:
        """Remove the schedule, its beat entry and its run history (stored outputs stay in the store)."""
        spec = self.get(name, owner)
        entry_for(spec, self.app, self.keys).delete()
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(self.keys.schedule(spec.owner, spec.name))
        pipe.srem(self.keys.owner_schedules(spec.owner), spec.name)
        self.runs.execute(pipe)
        self.runs.forget(spec.owner, spec.name)

    # -- times ---------------------------------------------------------------------------------

    def last_run_at(self, spec: ScheduleSpec) -> datetime | None:
        """When beat last queued a run (for a new schedule: when it was saved)."""
        return last_run_at(self.app, self.keys.beat_entry(spec.owner, spec.name))

    def next_runs(self, spec: ScheduleSpec, count: int = 3) -> list[datetime]:
        """The next times beat will queue a run (none while paused), in the schedule's timezone."""
        if spec.paused:
            return []
        now = datetime.now(timezone.utc)
        if spec.cron is not None:
            return CronSchedule(spec.cron, spec.timezone).upcoming(now, count)
        last = self.last_run_at(spec) or datetime.fromtimestamp(spec.updated, timezone.utc)
        zone = check_timezone(spec.timezone)
        return [t.astimezone(zone) for t in interval_upcoming(spec.every or 0, last, now, count)]

    # -- runs ----------------------------------------------------------------------------------

    def run_now(self, name: str, owner: str | None = None) -> RunTicket:
        """Queue a run at once, paused or not."""
        ticket = self.dispatch(self._owner(owner), name, trigger="manual")
        assert ticket is not None
        return ticket

    def dispatch(self, owner: str, name: str, trigger: str = "beat") -> RunTicket | None:
        """Queue a run: record it, create its job (record + ``queued`` event), send the task by name.

        Beat calls this at each due time (``trigger="beat"``): a paused or deleted schedule
        queues nothing and None is returned.
        """
        spec = self.find(name, owner)
        if spec is None:
            if trigger == "manual":
                raise ScheduleNotFound(f"no schedule named {name!r} for {owner}")
            orphan = self.keys.beat_entry(owner, name)  # its entry outlived it: beat forgets it
            get_redis(self.app).zrem(self.app.redbeat_conf.schedule_key, orphan)
            get_redis(self.app).delete(orphan)
            return None
        if spec.paused and trigger != "manual":
            return None
        run = NotebookRunSpec(
            id=new_job_id(), owner=owner, schedule=name, notebook_key=spec.notebook_key,
            parameters=spec.parameters, queue=spec.queue, kernel=spec.kernel, timeout=spec.timeout,
            retries=spec.retries, retry_delay=spec.retry_delay, overlap=spec.overlap, trigger=trigger,
        )  # fmt: skip
        self.runs.create(
            RunRecord(id=run.id, owner=owner, schedule=name, trigger=trigger, queued=run.submitted,
                      notebook_key=spec.notebook_key)
        )  # fmt: skip
        record = {
            "id": run.id, "name": name, "kind": "notebook", "queue": run.queue, "owner": owner,
            "submitted": f"{run.submitted:.6f}", "schedule": name, "trigger": trigger,
        }  # fmt: skip
        queued = self.events.create(run.id, record, Event(EventKind.QUEUED, {"queue": run.queue, "name": name}))
        limits = {}
        if run.timeout:
            soft = run.timeout + RUN_GRACE
            limits = {"soft_time_limit": soft, "time_limit": hard_limit(soft)}
        try:
            self.app.send_task(
                TASK_RUN_NOTEBOOK, args=[run.to_message()], task_id=run.id, queue=run.queue,
                routing_key=run.queue, argsrepr=f"[<run of {owner}:{name}>]", kwargsrepr="{}", **limits,
            )  # fmt: skip
        except OperationalError as exc:
            reason = f"could not be sent to the broker at {redact_url(self.settings.broker_url)}: {exc}"
            failed = Event(EventKind.FAILED, {"error_type": "ConnectionFailed", "message": reason, "reason": "submit"})
            self.events.append(run.id, failed)
            self.runs.finish(run.id, "failed", error=f"ConnectionFailed: {reason}", reason="submit")
            raise ConnectionFailed(f"run {run.id} of {name!r} {reason}") from exc
        return RunTicket(run.id, queued, spec)

    def history(self, name: str, owner: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The schedule's most recent runs, newest first."""
        spec = self.get(name, owner)
        return self.runs.recent(spec.owner, spec.name, limit)

    def output(self, run: RunRecord, kind: str = "notebook") -> bytes:
        """The executed notebook (``kind="notebook"``) or its HTML rendering (``"html"``) of a run."""
        key = {"notebook": run.output_notebook, "html": run.output_html}.get(kind)
        if key is None:
            raise InvalidSchedule(f"kind must be 'notebook' or 'html', got {kind!r}")
        if not key:
            raise ScheduleNotFound(f"run {run.id} of {run.schedule!r} stored no {kind} (state: {run.state})")
        return self.store.get(key)

    def close(self) -> None:
        self.redis.close()
        self.events.redis.close()
        self.app.close()
