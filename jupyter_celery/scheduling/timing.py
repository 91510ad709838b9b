"""When a schedule runs: cron expressions (croniter, in a timezone) and fixed intervals.

:class:`CronSchedule` is a Celery schedule, so beat (RedBeat) decides with it when a run is due,
and the times shown to users come from the same croniter computation.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import BaseSchedule, schedstate
from croniter import CroniterError, croniter

from jupyter_celery.core.errors import InvalidSchedule

CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
INTERVAL_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
MIN_INTERVAL = 1.0


def check_timezone(name: str) -> ZoneInfo:
    """The zone called ``name`` (an IANA name such as ``Europe/Paris``), or a clear error."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSchedule(f"unknown timezone {name!r} (use an IANA name such as 'Europe/Paris' or 'UTC')") from None


def check_cron(expression: str) -> str:
    """``expression`` normalised, if it is a valid 5-field cron expression (or an alias like ``@daily``).

    >>> check_cron(" 0 6  * * 1-5 ")
    '0 6 * * 1-5'
    """
    text = " ".join(str(expression).split())
    fields = text.split(" ")
    if text.lower() not in CRON_ALIASES and len(fields) != 5:
        raise InvalidSchedule(
            f"invalid cron expression {expression!r}: it needs 5 fields (minute hour day-of-month "
            "month day-of-week), e.g. '0 6 * * 1-5' for 06:00 on weekdays"
        )
    try:
        croniter(text)
    except (CroniterError, ValueError, KeyError) as exc:
        raise InvalidSchedule(f"invalid cron expression {expression!r}: {exc}") from None
    return text


def parse_every(every: str | float | timedelta) -> float:
    """Seconds between runs of an interval schedule: ``"15m"``, ``"1h30m"``, ``"2s"``, ``90``.

    >>> parse_every("1h30m"), parse_every("2s"), parse_every(90)
    (5400.0, 2.0, 90.0)
    """
    if isinstance(every, timedelta):
        seconds = every.total_seconds()
    elif isinstance(every, (int, float)) and not isinstance(every, bool):
        seconds = float(every)
    else:
        text = str(every).strip().lower().replace(" ", "")
        parts = INTERVAL_RE.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise InvalidSchedule(
                f"invalid interval {every!r}: use a number of seconds or amounts with units s, m, h, d, w "
                "such as '15m', '1h30m' or '2s'"
            )
        seconds = sum(float(n) * UNITS[u] for n, u in parts)
    if seconds < MIN_INTERVAL:
        raise InvalidSchedule(f"invalid interval {every!r}: the shortest interval is {MIN_INTERVAL:g}s")
    return seconds


def format_every(seconds: float) -> str:
    """The shortest spelling of an interval: ``5400`` -> ``'1h30m'``.

    >>> format_every(5400), format_every(2), format_every(86400)
    ('1h30m', '2s', '1d')
    """
    rest = round(seconds)
    if rest != seconds:
        return f"{seconds:g}s"
    out = ""
    for unit, size in sorted(UNITS.items(), key=lambda kv: -kv[1]):
        if unit == "w":
            continue
        amount, rest = divmod(rest, size)
        if amount:
            out += f"{amount}{unit}"
    return out or "0s"


class CronSchedule(BaseSchedule):  # type: ignore[misc]
    """A Celery schedule for a cron expression evaluated in its own timezone (croniter).

    >>> s = CronSchedule("0 6 * * 1-5", "Europe/Paris")
    >>> s.next_after(datetime(2026, 1, 2, 12, 0, tzinfo=timezone.utc)).isoformat()  # a Friday
    '2026-01-05T06:00:00+01:00'
    """

    def __init__(self, expression: str, timezone: str = "UTC", nowfun: Any = None, app: Any = None) -> None:
        super().__init__(nowfun=nowfun, app=app)
        self.expression = check_cron(expression)
        self.timezone = timezone
        self.zone = check_timezone(timezone)

    def next_after(self, moment: datetime) -> datetime:
        """The first time after ``moment`` that matches, in the schedule's timezone."""
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        found: datetime = croniter(self.expression, moment.astimezone(self.zone)).get_next(datetime)
        return found

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        it = croniter(self.expression, after.astimezone(self.zone))
        return [it.get_next(datetime) for _ in range(count)]

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        delta: timedelta = self.next_after(last_run_at) - self.now()
        return delta

    def is_due(self, last_run_at: datetime) -> schedstate:
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        if remaining > 0:
            return schedstate(False, remaining)
        now = self.now()
        return schedstate(True, (self.next_after(now) - now).total_seconds())

    def __repr__(self) -> str:
        return f"<cron {self.expression} ({self.timezone})>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CronSchedule):
            return (self.expression, self.timezone) == (other.expression, other.timezone)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.expression, self.timezone))

    def __reduce__(self) -> tuple[Any, ...]:
        return self.__class__, (self.expression, self.timezone)


def interval_upcoming(seconds: float, last_run_at: datetime, now: datetime, count: int) -> list[datetime]:
    """The next ``count`` runs of an interval schedule last run at ``last_run_at`` (overdue: now)."""
    first = max(last_run_at + timedelta(seconds=seconds), now)
    return [first + timedelta(seconds=seconds * i) for i in range(count)]
