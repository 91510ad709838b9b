"""The schedule model: one notebook, its parameters, when it runs and how (validated, JSON-safe).

A :class:`ScheduleSpec` is what the registry stores; every check happens when one is built, so
an invalid definition is an :class:`InvalidSchedule` error and nothing is saved.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from jupyter_celery.core.errors import ConfigurationError, InvalidSchedule
from jupyter_celery.core.protocol import DEFAULT_QUEUE, OVERLAP_POLICIES, OVERLAP_SKIP
from jupyter_celery.core.queues import profile
from jupyter_celery.scheduling.timing import check_cron, check_timezone, format_every, parse_every

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DEFAULT_RETRY_DELAY = 60.0


def check_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidSchedule(
            f"invalid schedule name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    return name


def name_for(notebook: str) -> str:
    """The default schedule name of a notebook: its file name without ``.ipynb``, made valid.

    >>> name_for("reports/daily report.ipynb")
    'daily-report'
    """
    stem = notebook.replace("\\", "/").rsplit("/", 1)[-1].removesuffix(".ipynb")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:64] or "notebook"


def check_parameters(parameters: dict[str, Any] | None) -> dict[str, Any]:
    """Parameters must be named like variables and be JSON values (they travel in JSON messages)."""
    checked = dict(parameters or {})
    for name, value in checked.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise InvalidSchedule(f"parameter names must be Python identifiers, got {name!r}")
        try:
            same = json.loads(json.dumps(value, allow_nan=False)) == value
        except (TypeError, ValueError):
            same = False
        if not same or (isinstance(value, (list, dict)) and _has_tuple(value)):
            raise InvalidSchedule(
                f"parameter {name!r} must be a JSON value (str, int, float, bool, None, list, dict), "
                f"got {type(value).__name__}"
            )
    return checked


def _has_tuple(value: Any) -> bool:
    if isinstance(value, tuple):
        return True
    if isinstance(value, list):
        return any(_has_tuple(v) for v in value)
    if isinstance(value, dict):
        return any(_has_tuple(v) for v in value.values())
    return False


def parse_parameter(text: str) -> tuple[str, Any]:
    """``key=value`` from a command line, the value typed: JSON first, then ``True``/``False``/``None``,
    else the text itself.

    >>> parse_parameter("days=7"), parse_parameter("region=emea"), parse_parameter("ok=True")
    (('days', 7), ('region', 'emea'), ('ok', True))
    >>> parse_parameter('code="007"'), parse_parameter("regions=[\\"emea\\", \\"apac\\"]")
    (('code', '007'), ('regions', ['emea', 'apac']))
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier():
        raise InvalidSchedule(f"parameters are given as name=value, got {text!r}")
    value: Any
    try:
        value = json.loads(raw)
    except ValueError:
        value = {"True": True, "False": False, "None": None}.get(raw.strip(), raw)
    return key, value


def parse_parameters(items: Iterable[str] | None) -> dict[str, Any]:
    return dict(parse_parameter(item) for item in items or ())


@dataclass(frozen=True)
class ScheduleSpec:
    """One schedule: run ``notebook`` (uploaded as ``notebook_key``) with ``parameters`` on ``queue``,
    on a ``cron`` expression in ``timezone`` or ``every`` so many seconds.

    ``timeout`` bounds each run (seconds, kernel start included); a failed run is tried again
    ``retries`` times, ``retry_delay`` seconds apart; ``overlap`` is ``"skip"`` (a run that finds
    the previous one still running is skipped and recorded as skipped) or ``"allow"``.
    """

    name: str
    owner: str
    notebook: str
    notebook_key: str
    cron: str | None = None
    every: float | None = None
    timezone: str = "UTC"
    parameters: dict[str, Any] = field(default_factory=dict)
    queue: str = DEFAULT_QUEUE
    kernel: str = "python3"
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = DEFAULT_RETRY_DELAY
    overlap: str = OVERLAP_SKIP
    paused: bool = False
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        check_name(self.name)
        if (self.cron is None) == (self.every is None):
            raise InvalidSchedule("a schedule needs exactly one of cron= (e.g. '0 6 * * 1-5') or every= (e.g. '15m')")
        if self.cron is not None:
            object.__setattr__(self, "cron", check_cron(self.cron))
        if self.every is not None:
            object.__setattr__(self, "every", parse_every(self.every))
        check_timezone(self.timezone)
        object.__setattr__(self, "parameters", check_parameters(self.parameters))
        try:
            profile(self.queue)
        except ConfigurationError as exc:
            raise InvalidSchedule(str(exc)) from None
        if self.timeout is not None and not self.timeout > 0:
            raise InvalidSchedule(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        if not isinstance(self.retries, int) or isinstance(self.retries, bool) or self.retries < 0:
            raise InvalidSchedule(f"retries must be an integer >= 0, got {self.retries!r}")
        if not self.retry_delay >= 0:
            raise InvalidSchedule(f"retry_delay must be >= 0 seconds, got {self.retry_delay!r}")
        if self.overlap not in OVERLAP_POLICIES:
            raise InvalidSchedule(f"overlap must be one of {', '.join(OVERLAP_POLICIES)}, got {self.overlap!r}")
        if not self.kernel:
            raise InvalidSchedule("kernel must name a kernel (e.g. 'python3')")

    @property
    def timing(self) -> str:
        """How the schedule fires, for people: ``cron 0 6 * * 1-5 (Europe/Paris)`` or ``every 15m``."""
        if self.cron is not None:
            return f"cron {self.cron} ({self.timezone})"
        return f"every {format_every(self.every or 0)}"

    def changed(self, **changes: Any) -> ScheduleSpec:
        """A copy with ``changes`` (validated); ``cron=`` drops ``every`` and the other way round."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise InvalidSchedule(f"schedules have no field(s) {', '.join(sorted(unknown))}")
        if changes.get("cron") is not None:
            changes.setdefault("every", None)
        if changes.get("every") is not None:
            changes.setdefault("cron", None)
        return replace(self, **changes, updated=time.time())

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ScheduleSpec:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
