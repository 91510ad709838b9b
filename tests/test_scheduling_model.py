"""The schedule model on its own: timing, parameters, validation, and RedBeat's view of a schedule."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from jupyter_celery.core.errors import InvalidSchedule
from jupyter_celery.core.protocol import Keys
from jupyter_celery.scheduling.model import ScheduleSpec, name_for, parse_parameter, parse_parameters
from jupyter_celery.scheduling.notebook import declared_parameters, parse_notebook
from jupyter_celery.scheduling.timing import CronSchedule, check_cron, format_every, parse_every

from .nbfiles import write_notebook

PARIS = "Europe/Paris"


def spec(**kw) -> ScheduleSpec:
    base = {"name": "s", "owner": "tester", "notebook": "n.ipynb", "notebook_key": "k", "every": "1h"}
    return ScheduleSpec(**(base | kw))


@pytest.mark.parametrize(
    ("text", "seconds"), [("2s", 2), ("15m", 900), ("1h30m", 5400), ("1d", 86400), ("1w", 604800), (90, 90)]
)
def test_intervals(text, seconds):
    assert parse_every(text) == seconds
    assert parse_every(format_every(seconds)) == seconds


@pytest.mark.parametrize("text", ["15x", "m", "", "0s", "0.5s", "1h 30", "-5m"])
def test_bad_intervals_are_clear_errors(text):
    with pytest.raises(InvalidSchedule, match="interval"):
        parse_every(text)


@pytest.mark.parametrize(
    ("expression", "match"),
    [("61 * * * *", "out of range"), ("0 6 * *", "needs 5 fields"), ("* * * * * *", "needs 5 fields"),
     ("0 6 * * monday-fri", "invalid cron"), ("not a cron", "needs 5 fields")],
)  # fmt: skip
def test_bad_cron_expressions_are_clear_errors(expression, match):
    with pytest.raises(InvalidSchedule, match=match):
        check_cron(expression)


def test_cron_runs_in_its_timezone_across_daylight_saving():
    weekdays_6am = CronSchedule("0 6 * * 1-5", PARIS)
    friday_noon = datetime(2026, 10, 23, 10, 0, tzinfo=timezone.utc)
    times = weekdays_6am.upcoming(friday_noon, 3)
    assert [t.isoformat() for t in times] == [
        "2026-10-26T06:00:00+01:00",  # Monday, after the switch to winter time (25 October)
        "2026-10-27T06:00:00+01:00",
        "2026-10-28T06:00:00+01:00",
    ]
    assert CronSchedule("@daily", "UTC").next_after(friday_noon).isoformat() == "2026-10-24T00:00:00+00:00"


def test_cron_schedule_tells_beat_when_it_is_due():
    now = datetime(2026, 1, 5, 5, 0, 30, tzinfo=timezone.utc)  # Monday 06:00:30 in Paris
    cron = CronSchedule("0 6 * * 1-5", PARIS, nowfun=lambda: now)
    due, wait = cron.is_due(now - timedelta(hours=1))
    assert due
    assert wait == pytest.approx(timedelta(days=1, seconds=-30).total_seconds())
    due, wait = cron.is_due(now)
    assert not due
    assert wait == pytest.approx(timedelta(days=1, seconds=-30).total_seconds())


@pytest.mark.parametrize(
    ("text", "expected"),
    [("days=7", ("days", 7)), ("ratio=0.5", ("ratio", 0.5)), ("region=emea", ("region", "emea")),
     ("ok=true", ("ok", True)), ("ok=False", ("ok", False)), ("none=None", ("none", None)),
     ('code="007"', ("code", "007")), ("tags=[1, 2]", ("tags", [1, 2])), ("empty=", ("empty", ""))],
)  # fmt: skip
def test_command_line_parameters_are_typed(text, expected):
    assert parse_parameter(text) == expected


@pytest.mark.parametrize("text", ["days", "=7", "not a name=1"])
def test_bad_command_line_parameters(text):
    with pytest.raises(InvalidSchedule, match="name=value"):
        parse_parameters([text])


def test_spec_validation():
    assert spec(cron=" 0 6 * * 1-5", every=None, timezone=PARIS).timing == "cron 0 6 * * 1-5 (Europe/Paris)"
    assert spec().timing == "every 1h"
    cases = [
        ({"every": None}, "exactly one of cron= .* or every="),
        ({"cron": "0 6 * * *"}, "exactly one of"),
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"parameters": {"when": datetime(2026, 1, 1)}}, "must be a JSON value"),
        ({"parameters": {"pair": (1, 2)}}, "must be a JSON value"),
        ({"parameters": {"x": float("nan")}}, "must be a JSON value"),
        ({"queue": "gpu_q"}, "unknown queue 'gpu_q'"),
        ({"timeout": 0}, "timeout must be a positive"),
        ({"retries": -1}, "retries must be"),
        ({"overlap": "queue"}, "overlap must be one of skip, allow"),
        ({"name": "bad name"}, "invalid schedule name"),
    ]
    for changes, match in cases:
        with pytest.raises(InvalidSchedule, match=match):
            spec(**changes)


def test_spec_round_trips_and_changes():
    s = spec(parameters={"region": "emea", "days": 7, "ratio": 0.5, "flags": [True, None]})
    assert ScheduleSpec.from_json(s.to_json()) == s
    assert list(json.loads(s.to_json())["parameters"]) == ["region", "days", "ratio", "flags"]  # the user's order
    cron = s.changed(cron="0 7 * * *")
    assert (cron.cron, cron.every) == ("0 7 * * *", None)
    assert cron.changed(every="5m").cron is None
    with pytest.raises(InvalidSchedule, match="no field"):
        s.changed(colour="red")


def test_parameters_cell_declares_the_parameters(tmp_path):
    assert declared_parameters("a = 1\nb: int = 2\nc, d = 3, 4\nif a:\n    e = 5\n", "n") == {"a": "1", "b": "2"}
    notebook = write_notebook(tmp_path / "n.ipynb", "print(region)", parameters='region = "emea"\ndays = 7')
    file = parse_notebook(notebook.read_bytes(), "n.ipynb")
    assert file.parameters == {"region": '"emea"', "days": "7"}
    file.check_parameters({"region": "apac"})
    with pytest.raises(InvalidSchedule, match=r"unknown parameter.*regio .*declares: region, days"):
        file.check_parameters({"regio": "apac"})
    plain = parse_notebook(write_notebook(tmp_path / "p.ipynb", "1").read_bytes(), "p.ipynb")
    with pytest.raises(InvalidSchedule, match="no cell tagged 'parameters'"):
        plain.check_parameters({"x": 1})
    with pytest.raises(InvalidSchedule, match="not a Jupyter notebook"):
        parse_notebook(b"{}", "x.ipynb")


def test_default_names():
    assert name_for("reports/daily.ipynb") == "daily"
    assert name_for("a b/Q3 report (final).ipynb") == "Q3-report-final"


def test_beat_entry_keys_are_those_of_the_protocol(stack):
    from jupyter_celery.core.app import make_app
    from jupyter_celery.kernel.client import get_client
    from jupyter_celery.scheduling.entries import NotebookEntry, configure_redbeat, entry_for

    settings = get_client().settings
    app = configure_redbeat(make_app(settings, name="entry-test"), settings)
    keys = Keys(settings.key_prefix)
    try:
        cron = spec(cron="0 6 * * 1-5", every=None, timezone=PARIS)
        entry = entry_for(cron, app, keys).save()
        assert entry.key == keys.beat_entry("tester", "s")
        assert app.redbeat_conf.schedule_key == keys.beat_schedule()
        assert app.redbeat_conf.lock_key == keys.beat_lock()
        loaded = NotebookEntry.from_key(entry.key, app=app)
        assert loaded.schedule == CronSchedule("0 6 * * 1-5", PARIS)
        assert loaded.args == ["tester", "s"]
        assert stack.redis.zscore(keys.beat_schedule(), entry.key) is not None
    finally:
        app.close()
