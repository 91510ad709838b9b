"""Scheduled notebooks run on real workers (papermill, real kernels), started with run_now: the
registry, the history, failures, retries, timeouts and overlap. Beat is in test_beat.py."""

from __future__ import annotations

import json
import signal

import pytest

from jupyter_celery.cli.redis_server import free_port, start_redis, wait_for_redis
from jupyter_celery.core.errors import (
    InvalidSchedule,
    JobCancelled,
    JobTimeout,
    RemoteError,
    ScheduleExists,
    ScheduleNotFound,
)
from jupyter_celery.core.protocol import EventKind, Keys
from jupyter_celery.core.settings import Settings
from jupyter_celery.kernel.client import get_client
from jupyter_celery.kernel.schedules import Schedule
from jupyter_celery.scheduling.entries import NotebookEntry
from jupyter_celery.scheduling.registry import Registry
from jupyter_celery.scheduling.timing import CronSchedule

from .nbfiles import cell_text, finished, gated_notebook, write_notebook
from .waiting import wait_until


@pytest.fixture
def registry(stack):
    reg = Registry(get_client().settings)
    yield reg
    reg.close()


def test_invalid_definitions_are_clear_errors_and_nothing_is_saved(registry, stack, tmp_path):
    notebook = write_notebook(tmp_path / "report.ipynb", "print(region)", parameters='region = "emea"\ndays = 7')
    plain = write_notebook(tmp_path / "plain.ipynb", "print(1)")
    stored = set(registry.store.keys())
    cases = [
        ({"cron": "61 6 * * *"}, "invalid cron expression '61 6 \\* \\* \\*'"),
        ({"cron": "0 6 * *"}, "needs 5 fields"),
        ({"every": "15x"}, "invalid interval '15x'"),
        ({"cron": "0 6 * * *", "timezone": "Mars/Olympus"}, "unknown timezone"),
        ({"every": "1h", "parameters": {"regoin": "apac"}}, "unknown parameter.*regoin.*declares: region, days"),
        ({"every": "1h", "parameters": {"days": {1, 2}}}, "must be a JSON value"),
        ({"every": "1h", "queue": "gpu_q"}, "unknown queue"),
        ({"every": "1h", "name": "no spaces"}, "invalid schedule name"),
    ]
    for options, match in cases:
        with pytest.raises(InvalidSchedule, match=match):
            registry.create(notebook, **options)
    with pytest.raises(InvalidSchedule, match="no cell tagged 'parameters'"):
        registry.create(plain, every="1h", parameters={"x": 1})
    with pytest.raises(InvalidSchedule, match="cannot read notebook"):
        registry.create(tmp_path / "missing.ipynb", every="1h")
    assert registry.all() == []
    heartbeats = ("jc:worker:", "jc:queue:")  # the workers write these every HEARTBEAT_INTERVAL, whatever the test does
    assert [k for k in stack.redis.scan_iter("jc:*") if not k.startswith(heartbeats)] == []
    assert set(registry.store.keys()) == stored


def test_definitions_are_kept_changed_and_removed(registry, stack, tmp_path):
    notebook = write_notebook(tmp_path / "daily.ipynb", "print(region)", parameters='region = "emea"')
    spec = registry.create(notebook, cron="0 6 * * 1-5", timezone="Europe/Paris", parameters={"region": "apac"})
    assert spec.name == "daily"
    assert registry.store.get(spec.notebook_key) == notebook.read_bytes()  # workers never read the user's file
    assert [t.hour for t in registry.next_runs(spec, 2)] == [6, 6]
    with pytest.raises(ScheduleExists, match="replace=True"):
        registry.create(notebook, every="1h")
    replaced = registry.create(notebook, every="1h", replace=True)
    assert (replaced.every, replaced.cron, replaced.created) == (3600, None, spec.created)

    write_notebook(notebook, "print(region, 2)", parameters='region = "emea"')
    updated = registry.update("daily", notebook=notebook, parameters={"region": "amer"})
    assert updated.notebook_key != spec.notebook_key
    assert registry.store.get(updated.notebook_key) == notebook.read_bytes()
    with pytest.raises(InvalidSchedule, match="unknown parameter"):
        registry.update("daily", parameters={"nope": 1})
    with pytest.raises(InvalidSchedule, match="name cannot change"):
        registry.update("daily", name="weekly")
    assert registry.get("daily") == updated  # nothing saved

    assert registry.pause("daily").paused
    assert registry.next_runs(registry.get("daily")) == []
    assert stack.redis.hget(Keys().beat_entry("tester", "daily"), "definition")
    registry.delete("daily")
    with pytest.raises(ScheduleNotFound):
        registry.get("daily")
    assert not stack.redis.exists(Keys().beat_entry("tester", "daily"), Keys().schedule("tester", "daily"))


def test_a_run_is_a_job_with_progress_history_and_stored_outputs(registry, stack, tmp_path):
    notebook = write_notebook(
        tmp_path / "report.ipynb",
        "total = sum(range(days))",
        "print(f'{region}: {total} ({type(days).__name__})')",
        parameters='region = "emea"\ndays = 7',
    )
    spec = registry.create(notebook, every="1d", parameters={"region": "apac", "days": 4}, paused=True)
    job = Schedule(spec, registry).run_now()  # paused: run_now still runs
    job.manifest(timeout=120)
    run = registry.runs.get(job.id)
    assert (run.state, run.trigger, run.failed_cell, run.attempt) == ("succeeded", "manual", None, 1)
    assert run.duration is not None and run.duration > 0
    assert job.result() == {
        "output_notebook": run.output_notebook,
        "output_html": run.output_html,
    }
    document = json.loads(registry.output(run))
    assert "apac: 6 (int)" in cell_text(document)  # parameters injected, with their types
    injected = [c for c in document["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert "days = 4" in "".join(injected[0]["source"])
    assert "apac: 6 (int)" in registry.output(run, "html").decode()

    events = registry.events.history(job.id)
    kinds = [e.kind for e in events]
    assert kinds[0] is EventKind.QUEUED and kinds[1] is EventKind.STARTED and kinds[-1] is EventKind.SUCCEEDED
    progress = [e.fields for e in events if e.kind is EventKind.PROGRESS]
    assert [(p["done"], p["total"]) for p in progress] == [(str(i), "4") for i in range(1, 5)]
    assert "".join(e.fields["text"] for e in events if e.kind is EventKind.STDOUT) == "apac: 6 (int)\n"
    record = registry.events.record(job.id)
    assert (record["kind"], record["name"], record["trigger"], record["state"]) == (
        "notebook", spec.name, "manual", "succeeded",
    )  # fmt: skip
    assert job.id in registry.events.owner_jobs("tester")
    assert [r.id for r in registry.history(spec.name)] == [job.id]


def test_a_failing_notebook_records_the_failing_cell_after_its_retries(registry, stack, tmp_path):
    notebook = write_notebook(
        tmp_path / "broken.ipynb",
        "print('before')",
        "raise ValueError(f'bad limit {limit}')",
        "print('after')",
        parameters="limit = 1",
    )
    spec = registry.create(notebook, every="1d", parameters={"limit": 5}, retries=1, retry_delay=0, paused=True)
    job = Schedule(spec, registry).run_now()
    with pytest.raises(RemoteError, match="ValueError: bad limit 5") as raised:
        job.manifest(timeout=300)
    assert "raise ValueError" in raised.value.traceback
    run = registry.runs.get(job.id)
    assert (run.state, run.attempt, run.failed_cell) == ("failed", 2, 2)  # cells: parameters, print, raise
    assert run.error == "ValueError: bad limit 5"
    assert "ValueError" in run.traceback and "\x1b[" not in run.traceback
    text = cell_text(json.loads(registry.output(run)))
    assert "before" in text and "ValueError: bad limit 5" in text and "after" not in text
    assert "bad limit 5" in registry.output(run, "html").decode()
    kinds = [e.kind for e in registry.events.history(job.id)]
    assert kinds.count(EventKind.STARTED) == 2
    assert kinds.count(EventKind.RETRYING) == 1
    assert kinds[-1] is EventKind.FAILED


def test_a_run_that_goes_over_its_timeout_is_stopped(registry, stack, tmp_path):
    notebook = write_notebook(tmp_path / "slow.ipynb", "print('starting')", "import time\ntime.sleep(600)")
    spec = registry.create(notebook, every="1d", timeout=12, paused=True)
    job = Schedule(spec, registry).run_now()
    with pytest.raises(JobTimeout, match="time limit of 12s"):
        job.manifest(timeout=300)
    run = registry.runs.get(job.id)
    assert (run.state, run.reason, run.failed_cell) == ("failed", "timeout", 1)
    assert run.duration < 60
    text = cell_text(json.loads(registry.output(run)))
    assert "starting" in text and "JobTimeout" in text
    assert registry.output(run, "html")
    assert not stack.redis.exists(Keys().schedule_running("tester", spec.name))  # the overlap lock is released


def test_an_overlapping_run_is_skipped_unless_allowed(registry, stack, tmp_path):
    notebook = gated_notebook(tmp_path / "gated.ipynb")
    gate = tmp_path / "gate-1"
    spec = registry.create(notebook, every="1d", parameters={"gate": str(gate)}, paused=True)
    first = registry.run_now(spec.name)
    wait_until(lambda: registry.runs.get(first.run_id).state == "running", 120, "the first run to start")
    second = registry.run_now(spec.name)
    skipped = wait_until(lambda: finished(registry, second.run_id), 120, "the second run to end")
    assert (skipped.state, skipped.reason) == ("skipped", "overlap")
    assert first.run_id in skipped.error
    terminal = registry.events.history(second.run_id)[-1]
    assert terminal.kind is EventKind.CANCELLED and "skipped" in terminal.fields["reason"]
    gate.touch()
    assert wait_until(lambda: finished(registry, first.run_id), 120, "the first run to end").state == "succeeded"

    gate = tmp_path / "gate-2"
    registry.update(spec.name, overlap="allow", parameters={"gate": str(gate)})
    both = [registry.run_now(spec.name).run_id for _ in range(2)]
    wait_until(lambda: all(registry.runs.get(r).state == "running" for r in both), 120, "both runs to run at once")
    gate.touch()
    for run_id in both:
        assert wait_until(lambda r=run_id: finished(registry, r), 120, "a run to end").state == "succeeded"
    assert [r.state for r in registry.history(spec.name)] == ["succeeded", "succeeded", "skipped", "succeeded"]


def test_schedules_survive_a_redis_restart(tmp_path):
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    server = start_redis(tmp_path / "redis", port, persistent=True)
    settings = Settings(
        broker_url=url, result_url=url, events_url=url, store_url=(tmp_path / "store").as_uri(), owner="tester"
    )
    notebook = write_notebook(tmp_path / "nightly.ipynb", "print(1)")
    try:
        wait_for_redis(url, server)
        registry = Registry(settings)
        spec = registry.create(notebook, cron="30 2 * * *", timezone="Europe/Paris")
        registry.close()
        server.send_signal(signal.SIGTERM)  # a clean shutdown writes the append-only file
        assert server.wait(30) == 0
        server.stderr.close()
        server = start_redis(tmp_path / "redis", port, persistent=True)
        wait_for_redis(url, server)
        registry = Registry(settings)
        assert registry.get("nightly") == spec
        entry = NotebookEntry.from_key(Keys().beat_entry("tester", "nightly"), app=registry.app)
        assert entry.schedule == CronSchedule("30 2 * * *", "Europe/Paris")
        assert entry.enabled
        registry.close()
    finally:
        server.terminate()
        server.wait(30)
        if server.stderr:
            server.stderr.close()


def test_a_cancelled_run_ends_cancelled_and_frees_its_schedule(registry, stack, tmp_path):
    notebook = gated_notebook(tmp_path / "gated.ipynb")
    gate = tmp_path / "gate"
    spec = registry.create(notebook, every="1d", parameters={"gate": str(gate)}, paused=True)
    job = Schedule(spec, registry).run_now()
    wait_until(
        lambda: any(e.kind is EventKind.PROGRESS for e in registry.events.history(job.id)), 120, "the run's first cell"
    )
    job.cancel()
    with pytest.raises(JobCancelled, match="terminated after the cancel grace period"):
        job.manifest(timeout=120)
    run = registry.runs.get(job.id)
    assert (run.state, run.reason) == ("cancelled", "cancelled")
    assert not stack.redis.exists(Keys().schedule_running("tester", spec.name))
    gate.touch()
    again = Schedule(spec, registry).run_now()  # not skipped: the lock went with the cancelled run
    again.manifest(timeout=120)
    assert registry.runs.get(again.id).state == "succeeded"
