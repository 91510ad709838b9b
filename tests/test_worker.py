"""The worker side against the wire: JSON only, versioned messages, reports on the stream."""

from __future__ import annotations

import pytest

from jupyter_celery.core.app import make_app
from jupyter_celery.core.errors import JobFailed
from jupyter_celery.core.messages import JobSpec
from jupyter_celery.core.protocol import TASK_RUN_CELL, new_job_id
from jupyter_celery.kernel.client import get_client

from .waiting import wait_until


def spec(code: str, **kw) -> JobSpec:
    return JobSpec(id=new_job_id(), kind="cell", code=code, owner="tester", **kw)


def test_worker_refuses_pickle_messages(stack):
    client = get_client()
    sender = make_app(client.settings, name="pickle-sender")
    sender.conf.accept_content = ["json", "pickle"]
    job = spec("x = 1")
    try:
        sender.send_task(TASK_RUN_CELL, args=[job.to_message()], task_id=job.id, queue="python_q", serializer="pickle")
        wait_until(lambda: "untrusted content of type pickle" in stack.log("python_q"), what="the refusal in the log")
    finally:
        sender.close()
    assert client.events.history(job.id) == []  # never started
    assert stack.redis.llen("python_q") == 0  # and not left in the queue
    ok = client.submit(spec("y = 2", outputs=("y",)))
    assert ok.result(timeout=60) == {"y": 2}


def test_message_of_another_protocol_version_ends_the_job(stack):
    client = get_client()
    job = spec("x = 1")
    message = job.to_message() | {"v": 99}
    client.events.create(job.id, {"owner": "tester", "submitted": "0"}, _queued())
    client.app.send_task(TASK_RUN_CELL, args=[message], task_id=job.id, queue="python_q")
    with pytest.raises(JobFailed, match="protocol version 99"):
        client.attach(job.id).result(timeout=60)


def test_output_of_a_cell_arrives_in_order(stack):
    client = get_client()
    execs_before = _script_calls(stack)
    code = "import sys\nfor i in range(300):\n    print(i)\n    print('e', i, file=sys.stderr)\n"
    job = client.submit(spec(code))
    job.result(timeout=60)
    events = job.events()
    out = "".join(e.fields["text"] for e in events if e.kind.value == "stdout")
    err = "".join(e.fields["text"] for e in events if e.kind.value == "stderr")
    assert out == "".join(f"{i}\n" for i in range(300))
    assert err == "".join(f"e {i}\n" for i in range(300))
    # 600 lines reach Redis in a few writes (batched), not one per print
    assert _script_calls(stack) - execs_before < 30


def _script_calls(stack) -> int:
    stats = stack.redis.info("commandstats")
    return sum(int(stats.get(name, {}).get("calls", 0)) for name in ("cmdstat_evalsha", "cmdstat_eval"))


def _queued():
    from jupyter_celery.core.protocol import Event, EventKind

    return Event(EventKind.QUEUED, {"queue": "python_q"})
