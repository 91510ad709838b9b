"""Live events through Redis Streams: progress, logs, async jobs, re-attach, cancellation, and
every way a job can end (killed worker child, hard time limit, dead worker, Redis restart)."""

from __future__ import annotations

import os
import signal

import psutil
import pytest

from jupyter_celery.core.errors import JobCancelled, JobTimeout
from jupyter_celery.core.messages import JobSpec
from jupyter_celery.core.protocol import (
    PYTHON_Q,
    TASK_ECHO,
    TASK_NAMESPACE,
    TASK_RUN_CELL,
    Event,
    EventKind,
    new_job_id,
)
from jupyter_celery.core.settings import Settings
from jupyter_celery.kernel.client import Client, get_client

from .waiting import wait_until


def kinds(job):
    return [e.kind.value for e in job.events()]


def submit_async(ip, code: str, options: str = "") -> object:
    result = ip.run_cell(f"%%celery --async -j _h {options}\n{code}")
    assert result.error_in_exec is None, result.error_in_exec
    return ip.user_ns["_h"]


def test_progress_and_output_arrive_in_order(ip, stack):
    job = submit_async(
        ip,
        "for i in range(1, 51):\n    progress(i, 50, f'step {i}')\n    print('line', i)\n",
    )
    assert job.wait(60)
    events = job.events()
    assert [k for k in kinds(job) if k not in ("progress", "stdout")] == ["queued", "started", "succeeded"]
    done = [float(e.fields["done"]) for e in events if e.kind is EventKind.PROGRESS]
    assert done == sorted(done)
    assert done[-1] == 50.0
    last = [e for e in events if e.kind is EventKind.PROGRESS][-1]
    assert last.fields["message"] == "step 50"
    text = "".join(e.fields["text"] for e in events if e.kind is EventKind.STDOUT)
    assert text == "".join(f"line {i}\n" for i in range(1, 51))
    ids = [e.id for e in events]
    assert ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert len(set(ids)) == len(ids)


def test_async_returns_at_once_and_binds_only_when_asked(ip, stack):
    ip.user_ns.pop("made", None)
    ip.run_cell("import threading; gate = None")
    job = submit_async(ip, "made = 41 + 1")
    assert "made" not in ip.user_ns  # not bound until asked
    assert job.result(timeout=60) == {"made": 42}
    assert job.done() and not job.cancelled() and not job.running()
    assert job.exception() is None
    assert "made" not in ip.user_ns
    job.bind()
    assert ip.user_ns["made"] == 42


def test_async_dash_o_names_the_handle_like_ipyparallel(ip, stack):
    ip.user_ns.pop("myjob", None)
    result = ip.run_cell("%%celery --async -o myjob\nanswer = 6 * 7")
    assert result.error_in_exec is None
    job = ip.user_ns["myjob"]
    assert job.result(timeout=60) == {"answer": 42}
    ip.run_line_magic("celery_wait", "")
    assert ip.user_ns["answer"] == 42


def test_done_callbacks_and_wait_all(ip, stack):
    import jupyter_celery as jc

    seen = []
    jobs = [submit_async(ip, f"v = {i}") for i in range(5)]
    jobs[0].add_done_callback(lambda j: seen.append(j.id))
    assert jc.wait_all(timeout=60)
    assert all(j.done() for j in jobs)
    assert seen == [jobs[0].id]
    late = []
    jobs[1].add_done_callback(lambda j: late.append(j.state))  # already done: called at once
    assert late == ["succeeded"]


def test_reattach_replays_the_same_events(stack, ip):
    job = submit_async(ip, "for i in range(5):\n    progress(i + 1, 5)\n    print(i)\nout = 'x'")
    job.wait(60)
    live = [(e.id, e.kind, e.fields) for e in job.events()]
    other = Client(Settings.from_env())  # another kernel: nothing in memory
    try:
        again = other.attach(job.id)
        assert again.done()
        assert [(e.id, e.kind, e.fields) for e in again.events()] == live
        assert again.result() == {"i": 4, "out": "x"}
    finally:
        other.close()


def test_a_job_that_ended_before_the_reader_started_is_seen(stack):
    first = Client(Settings.from_env())
    job_id = new_job_id()
    first.submit(JobSpec(id=job_id, kind="cell", code="z = 3", outputs=("z",), owner="tester")).result(timeout=60)
    first.close()
    later = Client(Settings.from_env())
    try:
        job = later.attach(job_id)
        assert job.state == "succeeded"
        assert job.result(timeout=5) == {"z": 3}
    finally:
        later.close()


def test_cancel_a_queued_job_and_a_running_one(ip, stack):
    # circuit_q has one process: a long job occupies it, the next one waits in the queue
    running = submit_async(
        ip, "import time\nfor i in range(600):\n    progress(i, 600)\n    time.sleep(0.1)", "-q circuit_q"
    )
    wait_until(lambda: running.state == "running", 60, "the first job to start")
    queued = submit_async(ip, "never = True", "-q circuit_q")
    assert queued.state == "queued"
    assert queued.cancel()
    assert running.cancel()
    assert running.wait(60) and queued.wait(60)
    assert running.state == "cancelled"
    assert "cancellation point" in running.terminal.fields["reason"]
    assert queued.state == "cancelled"
    assert "started" not in kinds(queued)  # it never started
    with pytest.raises(JobCancelled):
        queued.result()
    assert not queued.cancel()  # already ended
    # the worker is free for the next job
    assert submit_async(ip, "after = 1", "-q circuit_q").result(timeout=60) == {"after": 1}


def test_cancel_a_job_that_never_reaches_a_cancellation_point(ip, stack):
    job = submit_async(ip, "import time\ntime.sleep(120)", "-q circuit_q")
    wait_until(lambda: job.state == "running", 60, "the job to start")
    job.cancel()
    assert job.wait(60)  # CANCEL_GRACE is 2 s in the test stack
    assert job.state == "cancelled", job.terminal
    assert "terminated" in job.terminal.fields["reason"]
    assert submit_async(ip, "after = 2", "-q circuit_q").result(timeout=60) == {"after": 2}


def test_killed_worker_child_reruns_the_job_with_a_retrying_event(ip, stack, tmp_path):
    marker = tmp_path / "first-attempt"
    job = submit_async(
        ip,
        f"import os, time\nif not os.path.exists({str(marker)!r}):\n"
        f"    open({str(marker)!r}, 'w').close()\n    time.sleep(120)\nresult = 'second attempt'",
        "-q circuit_q",
    )
    wait_until(lambda: marker.exists() and job.state == "running", 60, "the first attempt to start")
    pid = int(next(e for e in job.events() if e.kind is EventKind.STARTED).fields["pid"])
    os.kill(pid, signal.SIGKILL)
    assert job.result(timeout=90)["result"] == "second attempt"
    names = kinds(job)
    assert "retrying" in names
    assert names.count("started") == 2
    retry = next(e for e in job.events() if e.kind is EventKind.RETRYING)
    assert retry.fields["attempt"] == "2"


def test_hard_time_limit_ends_the_job(ip, stack):
    job = submit_async(
        ip,
        "import time\ntry:\n    time.sleep(60)\nexcept BaseException:\n    time.sleep(60)  # ignores the soft limit",
        "--timeout 1 -q circuit_q",
    )
    assert job.wait(60)
    with pytest.raises(JobTimeout, match="hard time limit"):
        job.result()
    assert submit_async(ip, "after = 3", "-q circuit_q").result(timeout=60) == {"after": 3}


def test_dead_worker_ends_its_job_lost(ip, stack):
    job = submit_async(ip, "import time\ntime.sleep(120)", "-q circuit_q")
    wait_until(lambda: job.state == "running", 60, "the job to start")
    stack.kill_worker("circuit_q")
    try:
        assert job.wait(60), "the reader should notice the dead worker"
        assert job.state == "lost"
        assert "circuit_q@test" in job.terminal.fields["reason"]
    finally:
        stack.restart_worker("circuit_q")


def test_redis_restart_mid_job_loses_and_duplicates_nothing(ip, stack):
    job = submit_async(
        ip,
        "import time\nfor i in range(40):\n    print('line', i)\n    progress(i + 1, 40)\n"
        "    time.sleep(0.1)\ndone = True",
    )
    wait_until(lambda: any(e.kind is EventKind.STDOUT for e in job.events()), 60, "the first output")
    stack.restart_redis()
    assert job.result(timeout=120)["done"] is True
    events = job.events()
    text = "".join(e.fields["text"] for e in events if e.kind is EventKind.STDOUT)
    assert text == "".join(f"line {i}\n" for i in range(40))
    assert len({e.id for e in events}) == len(events)
    assert [e.kind.terminal for e in events].count(True) == 1
    # what the stream holds after the restart is what the notebook saw
    assert [(e.id, e.fields) for e in get_client().events.history(job.id)] == [(e.id, e.fields) for e in events]


def test_tqdm_in_a_job_is_progress(ip, stack):
    job = submit_async(ip, "from tqdm import tqdm\nfor i in tqdm(range(30), desc='bars'):\n    pass\nn_done = i")
    assert job.result(timeout=60)["n_done"] == 29
    progress = [e for e in job.events() if e.kind is EventKind.PROGRESS]
    assert progress
    assert float(progress[-1].fields["done"]) == 30.0
    assert progress[-1].fields["total"] == "30"
    assert progress[-1].fields["message"] == "bars"
    assert not [e for e in job.events() if e.kind is EventKind.STDERR]  # no bar drawn on stderr


def test_progress_importable_in_jobs_and_a_no_op_here(ip, stack):
    from jupyter_celery import progress

    progress(1, 2, "in the kernel: nothing happens")
    job = submit_async(ip, "from jupyter_celery import progress as p\np(3, None, 'unknown total')\nk = 1")
    job.result(timeout=60)
    last = [e for e in job.events() if e.kind is EventKind.PROGRESS][-1]
    assert last.fields["done"] == "3"
    assert "total" not in last.fields


def test_terminal_ipython_prints_text_progress(ip, stack, capsys):
    result = ip.run_cell(
        "%%celery\nimport time\nfor i in range(3):\n    progress(i + 1, 3, 'tick')\n    time.sleep(0.6)"
    )
    assert result.error_in_exec is None
    err = capsys.readouterr().err
    assert "running on python_q@test" in err
    assert "succeeded" in err
    assert "3/3 (100%) tick" in err


def test_celery_jobs_lists_recent_jobs(ip, stack):
    submit_async(ip, "w = 1", "-n listed-job").result(timeout=60)
    table = ip.run_line_magic("celery_jobs", "5")
    row = next(r for r in table.rows if r["name"] == "listed-job")
    assert row["state"] == "succeeded"
    assert row["queue"] == "python_q"
    assert row["worker"] == "python_q@test"
    assert "listed-job" in table._repr_html_()
    assert "listed-job" in repr(table)


def test_celery_cancel_magic(ip, stack, capsys):
    job = submit_async(ip, "import time\nfor i in range(600):\n    progress(i)\n    time.sleep(0.1)")
    wait_until(lambda: job.state == "running", 60, "the job to start")
    ip.run_line_magic("celery_cancel", job.id)
    assert job.wait(30)
    assert job.state == "cancelled"
    assert "cancel requested" in capsys.readouterr().out


def test_reader_follows_many_jobs_with_one_blocking_read(ip, stack):
    client = get_client()
    jobs = [submit_async(ip, f"r = {i} * 2") for i in range(40)]
    reader = client.reader
    assert reader._thread.is_alive()
    assert [j.result(timeout=120)["r"] for j in jobs] == [i * 2 for i in range(40)]
    assert all(j.id not in reader._positions for j in jobs)  # ended jobs are no longer followed
    assert psutil.Process().num_threads() < 20  # one reader thread, not one per job


def test_display_in_a_job_reaches_the_notebook(ip, stack, capsys):
    ip.run_cell(
        "class Rich:\n    def _repr_html_(self):\n        return '<b>rich</b>'\n"
        "    def __repr__(self):\n        return 'Rich()'\n"
    )
    job = submit_async(ip, "display(Rich())\nx = 1")
    job.result(timeout=60)
    shown = [e for e in job.events() if e.kind is EventKind.DISPLAY]
    assert [e.fields["data"] for e in shown] == [{"text/plain": "Rich()", "text/html": "<b>rich</b>"}]
    capsys.readouterr()
    assert ip.run_cell("%%celery\nfrom jupyter_celery import display as show\nshow(Rich())").error_in_exec is None
    assert "Rich()" in capsys.readouterr().out  # a blocking cell shows it as the cell's own output


def test_a_late_queued_event_does_not_set_a_job_back_to_queued(stack):
    """With a separate events Redis, the kernel's create may land after the worker's first event."""
    from jupyter_celery.core.protocol import Event

    client = get_client()
    job_id = new_job_id()
    client.events.append(job_id, Event(EventKind.STARTED, {"worker": "w@test", "pid": 1, "attempt": 1}))
    record = {"id": job_id, "owner": "tester", "submitted": "1", "queue": "python_q", "name": "", "kind": "cell"}
    client.events.create(job_id, record, Event(EventKind.QUEUED, {"queue": "python_q"}))
    assert client.events.record(job_id)["state"] == "running"
    job = client.attach(job_id)
    assert [e.kind for e in job.events()] == [EventKind.STARTED, EventKind.QUEUED]
    assert job.state == "running"


def test_a_message_the_worker_refuses_ends_the_job_failed(stack):
    """Celery records nothing for a message its worker refuses: the job must not stay queued."""
    client = get_client()
    spec = JobSpec(id=new_job_id(), kind="cell", code="x = 1", owner=client.settings.owner, name="pickled")
    record = {"id": spec.id, "owner": spec.owner, "submitted": f"{spec.submitted:.6f}", "queue": spec.queue}
    client.events.create(spec.id, record, Event(EventKind.QUEUED, {"queue": spec.queue}))
    job = client.attach(spec.id)
    # a pickled message (a client of another make): the worker accepts JSON only
    client.app.send_task(TASK_RUN_CELL, args=[spec.to_message()], task_id=spec.id, queue=PYTHON_Q, serializer="pickle")
    assert job.wait(30), "a refused job must end"
    assert job.state == "failed"
    assert job.terminal.fields["reason"] == "rejected"
    assert "refused the job's message" in job.terminal.fields["message"]
    assert client.app.send_task(TASK_ECHO, args=[7], queue=PYTHON_Q).get(timeout=30) == 7  # the worker carries on


def test_a_task_the_worker_does_not_have_ends_the_job_failed(stack):
    client = get_client()
    spec = JobSpec(id=new_job_id(), kind="cell", code="x = 1", owner=client.settings.owner, name="newer")
    job = client.submit(spec, task=TASK_NAMESPACE + "from_a_newer_version")
    assert job.wait(30), "a job whose task the worker lacks must end"
    assert job.state == "failed"
    assert job.terminal.fields["reason"] == "unknown task"  # from the worker at once, not the kernel's liveness check
    assert "from_a_newer_version" in job.terminal.fields["message"]
    assert client.app.send_task(TASK_ECHO, args=[8], queue=PYTHON_Q).get(timeout=30) == 8
