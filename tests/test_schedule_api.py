"""Scheduled notebooks from a notebook (``jc.schedule_notebook``, the magics) and from a shell
(``jupyter-celery schedule``), against the test stack."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import jupyter_celery as jc
from jupyter_celery.core.errors import InvalidSchedule, ScheduleExists, ScheduleNotFound
from jupyter_celery.kernel.schedules import Schedule, ScheduleList

from .nbfiles import write_notebook

PARAMETERS = 'region = "emea"\ndays = 7'


@pytest.fixture
def report(tmp_path, stack, monkeypatch):
    monkeypatch.chdir(tmp_path)  # notebooks are named relative to the current directory, as in a notebook
    write_notebook(tmp_path / "report.ipynb", "print(f'{region} {days}')", parameters=PARAMETERS)
    return "report.ipynb"


def test_the_python_api(report):
    s = jc.schedule_notebook(
        report, cron="0 6 * * 1-5", timezone="Europe/Paris", parameters={"region": "apac", "days": 3},
        name="daily-apac", timeout=1800, retries=1,
    )  # fmt: skip
    assert isinstance(s, Schedule)
    assert (s.spec.cron, s.spec.timeout, s.spec.retries) == ("0 6 * * 1-5", 1800, 1)
    assert [t.strftime("%H:%M %Z") for t in s.next_runs(2)] in (["06:00 CET"] * 2, ["06:00 CEST"] * 2)
    assert "next runs" in repr(s) and "<table" in s._repr_html_()
    with pytest.raises(ScheduleExists):
        jc.schedule_notebook(report, every="1h", name="daily-apac")

    s.update(cron="0 7 * * *")
    assert s.refresh().spec.cron == "0 7 * * *"
    assert s.pause().spec.paused and s.next_runs() == []
    assert not s.resume().spec.paused

    listed = jc.schedules()
    assert isinstance(listed, ScheduleList)
    assert [x.name for x in listed] == ["daily-apac"]
    assert "daily-apac" in repr(listed) and "<table" in listed._repr_html_()

    job = s.run_now()
    job.manifest(timeout=120)
    assert "apac 3" in "".join(str(o.get("text", "")) for c in s.output()["cells"] for o in c.get("outputs", []))
    assert "apac 3" in s.output(kind="html")
    assert s.runs()[0].state == "succeeded" and "succeeded" in repr(s.runs())

    s.delete()
    with pytest.raises(ScheduleNotFound):
        s.refresh()
    assert list(jc.schedules()) == []


def test_the_magics(ip, report):
    s = ip.run_line_magic(
        "celery_schedule", f'{report} --cron "30 6 * * 1-5" --tz Europe/Paris -p region=amer -p days=14 -n magic'
    )
    assert s.spec.parameters == {"region": "amer", "days": 14}  # typed from the command line
    assert s.spec.timing == "cron 30 6 * * 1-5 (Europe/Paris)"
    listed = ip.run_line_magic("celery_schedules", "")
    assert [x.name for x in listed] == ["magic"]
    with pytest.raises(InvalidSchedule, match="invalid cron"):
        ip.run_line_magic("celery_schedule", f'{report} --cron "0 6 * *" -n other')
    with pytest.raises(InvalidSchedule, match="unknown parameter"):
        ip.run_line_magic("celery_schedule", f"{report} --every 15m -p colour=red -n other")
    assert [x.name for x in ip.run_line_magic("celery_schedules", "")] == ["magic"]  # nothing saved
    for magic in ("celery_schedule", "celery_schedules"):
        assert "Examples" in ip.find_line_magic(magic).__doc__
    s.delete()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter_celery", "schedule", *args],
        env=dict(os.environ), capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def test_the_command_line(report):
    added = cli("add", report, "--every", "1h", "-p", "region=apac", "-p", "days=2", "-n", "hourly", "--paused")
    assert added.returncode == 0, added.stderr
    assert "scheduled 'hourly'" in added.stdout and "none (paused)" in added.stdout

    bad = cli("add", report, "--cron", "0 6 * *")
    assert bad.returncode == 2 and "needs 5 fields" in bad.stderr
    unknown = cli("add", report, "--every", "1h", "-p", "colour=red", "-n", "other")
    assert unknown.returncode == 2 and "unknown parameter(s) colour" in unknown.stderr

    listing = cli("list")
    assert listing.returncode == 0
    assert "hourly" in listing.stdout and "every 1h" in listing.stdout and "other" not in listing.stdout
    assert "is active" in cli("resume", "hourly").stdout
    assert "is paused" in cli("pause", "hourly").stdout

    ran = cli("run", "hourly", "--wait")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "apac 2\n" in ran.stdout and "[3/3]" in ran.stdout and ran.stdout.rstrip().endswith("succeeded")
    runs = cli("runs", "hourly")
    assert "manual   succeeded" in runs.stdout
    shown = cli("show", "hourly")
    assert "paused" in shown.stdout and "succeeded" in shown.stdout

    assert cli("delete", "hourly").returncode == 0
    missing = cli("show", "hourly")
    assert missing.returncode == 2 and "no schedule named 'hourly'" in missing.stderr
