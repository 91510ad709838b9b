"""Beat queues scheduled runs: a real ``jupyter-celery beat`` process against the test stack."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from jupyter_celery.cli.stack import beat_lock_holder, start_beat, wait_for_beat
from jupyter_celery.core.protocol import EventKind, Keys
from jupyter_celery.kernel.client import get_client
from jupyter_celery.scheduling.registry import Registry

from .nbfiles import cell_text, finished, write_notebook
from .waiting import wait_until

MAX_INTERVAL = 1.0  # beat looks at the schedules every second; its lock expires 5 s after it dies


class Beat:
    """The beat process of this module's tests."""

    def __init__(self, stack) -> None:
        self.stack = stack
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_beat(dict(os.environ), self.stack.logs, max_interval=MAX_INTERVAL)
        wait_for_beat(self.stack.url, 60, self.proc)

    def start_after(self, dead: str | None) -> None:
        """Start again; return once the new beat holds the lock (the dead one's expires first)."""
        self.proc = start_beat(dict(os.environ), self.stack.logs, max_interval=MAX_INTERVAL)
        wait_until(lambda: beat_lock_holder(self.stack.url) not in (None, dead), 60, "the new beat to take the lock")

    def kill(self) -> str | None:
        """SIGKILL: no clean shutdown, the lock stays until it expires. Returns the dead beat's lock token."""
        assert self.proc is not None
        token = beat_lock_holder(self.stack.url)
        self.proc.kill()
        self.proc.wait()
        return token

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture(scope="module")
def beat(running_stack):
    process = Beat(running_stack)
    process.start()
    yield process
    process.stop()


@pytest.fixture
def registry(stack, beat):
    reg = Registry(get_client().settings)
    yield reg
    for spec in reg.all():
        reg.delete(spec.name)
    reg.close()


def beat_runs(registry, name: str) -> list:
    return [r for r in registry.runs.recent("tester", name, 100) if r.trigger == "beat"]


def count_at_least(registry, name: str, n: int, state: str | None = None) -> list | None:
    runs = [r for r in beat_runs(registry, name) if state is None or r.state == state]
    return runs if len(runs) >= n else None


def test_an_interval_schedule_runs_with_its_parameters_and_keeps_outputs(registry, tmp_path):
    notebook = write_notebook(
        tmp_path / "report.ipynb",
        "total = sum(range(days))",
        "print(f'{region}: {total} ({type(days).__name__})')",
        parameters='region = "emea"\ndays = 7',
    )
    registry.create(notebook, name="every-2s", every="2s", parameters={"region": "apac", "days": 4})
    runs = wait_until(lambda: count_at_least(registry, "every-2s", 2, "succeeded"), 120, "two runs by beat")
    for run in runs[:2]:
        assert "apac: 6 (int)" in cell_text(json.loads(registry.output(run)))
        assert "apac: 6 (int)" in registry.output(run, "html").decode()
        record = registry.events.record(run.id)  # beat created the job record: history and attach work as usual
        assert (record["kind"], record["trigger"], record["state"]) == ("notebook", "beat", "succeeded")
        events = registry.events.history(run.id)
        assert events[0].kind is EventKind.QUEUED and events[-1].kind is EventKind.SUCCEEDED
        assert any(e.kind is EventKind.PROGRESS and e.fields["done"] == e.fields["total"] for e in events)


def test_pause_resume_run_now_and_delete(registry, tmp_path):
    notebook = write_notebook(tmp_path / "tick.ipynb", "print('tick')")
    registry.create(notebook, name="main", every="2s")
    wait_until(lambda: count_at_least(registry, "main", 1), 120, "a first run")
    registry.pause("main")

    # A witness schedule proves beat keeps ticking: beat is one thread, so once the witness's
    # first run is queued, any run of "main" queued before the pause exists already.
    registry.create(notebook, name="witness", every="2s", queue="circuit_q")
    wait_until(lambda: count_at_least(registry, "witness", 1), 120, "the witness's first run")
    paused_count = len(beat_runs(registry, "main"))
    wait_until(lambda: count_at_least(registry, "witness", 3), 120, "two more witness runs")
    assert len(beat_runs(registry, "main")) == paused_count  # 4 s, twice its interval, and no run

    manual = registry.run_now("main")  # run_now while paused
    assert wait_until(lambda: finished(registry, manual.run_id), 120, "the manual run").state == "succeeded"

    registry.resume("main")
    wait_until(lambda: count_at_least(registry, "main", paused_count + 1), 120, "a run after resume")

    registry.delete("main")
    witnessed = len(beat_runs(registry, "witness"))
    after = wait_until(lambda: count_at_least(registry, "witness", witnessed + 1), 120, "a witness run")[0].queued
    wait_until(lambda: count_at_least(registry, "witness", witnessed + 3), 120, "two more witness runs")
    index = registry.events.keys.owner_jobs("tester")
    queued_since = registry.events.redis.zrangebyscore(index, after, "+inf")
    assert queued_since, "the witness's runs are jobs of the owner"
    assert {registry.events.record(j)["name"] for j in queued_since} == {"witness"}  # no run of "main" followed
    assert beat_runs(registry, "main") == []  # its history went with it
    assert not registry.redis.exists(Keys().beat_entry("tester", "main"), Keys().schedule("tester", "main"))


def test_beat_killed_and_restarted_keeps_schedules_and_runs_resume(registry, beat, tmp_path):
    notebook = write_notebook(tmp_path / "tick.ipynb", "print('tick')")
    spec = registry.create(notebook, name="survivor", every="2s")
    wait_until(lambda: count_at_least(registry, "survivor", 1), 120, "a first run")
    dead = beat.kill()
    before = {r.id for r in beat_runs(registry, "survivor")}
    beat.start_after(dead)
    assert registry.get("survivor") == spec
    wait_until(lambda: {r.id for r in beat_runs(registry, "survivor")} - before, 120, "a run queued by the new beat")
