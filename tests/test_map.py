"""jc.map on real workers: order, chunking, failing items, cancelling as a whole, the aggregate view."""

from __future__ import annotations

import time

import pytest

import jupyter_celery as jc
from jupyter_celery.core.errors import JobCancelled, MapFailed
from jupyter_celery.core.protocol import EventKind
from jupyter_celery.kernel.map_view import map_status

from .test_functions import define
from .waiting import wait_until


def test_map_of_ten_thousand_items_in_order(ip, stack):
    ns = define(ip, "def square(x):\n    return x * x\n")
    squares = jc.map(ns["square"], range(10_000))
    assert squares.result(timeout=120) == [x * x for x in range(10_000)]
    assert squares.state == "succeeded" and squares.done() and not squares.cancelled()
    assert squares.errors() == []
    sizes = [c.size for c in squares.chunks]
    assert sizes[0] == 1  # a one-item probe measures the cost of an item first
    assert max(sizes) > 1_000  # then trivial items go in large chunks
    assert len(sizes) < 100
    progress = squares.progress()
    assert (progress.done, progress.failed, progress.total) == (10_000, 0, 10_000)
    assert "succeeded" in map_status(squares) and "10000/10000 items" in map_status(squares)


def test_failing_items_are_reported_and_the_others_complete(ip, stack):
    ns = define(ip, "def inverse(x):\n    return 1 / (x % 10 - 3)\n")
    inverses = jc.map(ns["inverse"], range(100), chunksize=7)
    assert inverses.wait(120)
    errors = inverses.errors()
    assert [e.index for e in errors] == list(range(3, 100, 10))
    assert {e.error_type for e in errors} == {"ZeroDivisionError"}
    assert "in inverse" in errors[0].traceback
    assert "return 1 / (x % 10 - 3)" in errors[0].traceback  # the notebook cell's line, shown by the worker
    assert 'File "Cell In[' in errors[0].traceback  # named as IPython names the cell
    assert str(errors[0]) == "item 3: ZeroDivisionError: division by zero"
    with pytest.raises(MapFailed, match="10 of 100 items") as caught:
        inverses.result()
    assert caught.value.errors == errors
    assert inverses.state == "failed"
    values = inverses.result(errors="none")
    assert len(values) == 100
    assert values[3] is None and values[13] is None
    assert values[4] == 1.0 and values[0] == pytest.approx(-1 / 3)
    assert all(c.size <= 7 for c in inverses.chunks)


def test_cancel_a_map_midway_starts_no_further_chunk(ip, stack):
    ns = define(ip, "import time\ndef slow(x):\n    time.sleep(0.5)\n    return x\n")
    work = jc.map(ns["slow"], range(40), chunksize=1)
    window = work.window  # chunks kept in flight: the workers' slots run some, the others wait queued
    wait_until(
        lambda: sum(j.state == "succeeded" for j in work.jobs) >= 2 and len(work.jobs) >= window + 2,
        60,
        "two chunks to succeed and the window to be refilled",
    )
    assert work.cancel()
    cancelled_at = time.time()
    sent = [j.id for j in work.jobs]
    assert work.wait(60)
    assert [j.id for j in work.jobs] == sent  # nothing sent after the cancel
    assert len(sent) < 40
    assert work.cancelled() and work.state == "cancelled"
    assert not work.cancel()  # already ended
    for job in work.jobs:
        assert job.state in ("succeeded", "cancelled"), job
        starts = [e.ts for e in job.events() if e.kind is EventKind.STARTED]
        assert all(ts <= cancelled_at for ts in starts), f"{job.name} started after the cancel"
    never_started = [j for j in work.jobs if "started" not in [e.kind.value for e in j.events()]]
    assert never_started, f"the chunks that were waiting in the queue never start (window {window})"
    assert all(j.state == "cancelled" for j in never_started)
    with pytest.raises(JobCancelled, match="cancelled after"):
        work.result()
    assert work.progress().done < 40


def test_map_items_retry_in_place(ip, stack, tmp_path):
    ns = define(
        ip,
        "import os\n"
        "def once_flaky(x, base=" + repr(str(tmp_path)) + "):\n"
        "    path = os.path.join(base, str(x))\n"
        "    if x == 2 and not os.path.exists(path):\n"
        "        open(path, 'w').close()\n"
        "        raise ConnectionError('reset')\n"
        "    return x\n",
    )
    values = jc.map(ns["once_flaky"], range(5), retries=1, retry_delay=0.01, chunksize=5)
    assert values.result(timeout=60) == [0, 1, 2, 3, 4]
    retrying = [e for j in values.jobs for e in j.events() if e.kind is EventKind.RETRYING]
    assert len(retrying) == 1 and "item 2" in retrying[0].fields["reason"]


def test_map_of_nothing_and_wait_all(ip, stack):
    assert jc.map(abs, []).result(timeout=5) == []
    ns = define(ip, "def neg(x):\n    return -x\n")
    negated = jc.map(ns["neg"], range(50), chunksize=10)
    jc.wait_all(timeout=120)
    assert negated.done()
    assert negated.result() == [-x for x in range(50)]
    assert jc.gather([negated, jc.submit(abs, -3)], timeout=60) == [[-x for x in range(50)], 3]


def test_each_item_has_its_own_time_limit(ip, stack):
    ns = define(ip, "import time\ndef nap(x):\n    time.sleep(x)\n    return x\n")
    naps = jc.map(ns["nap"], [0, 0, 30, 0], chunksize=4, timeout=0.5)
    errors = naps.errors() if naps.wait(60) else None
    assert errors is not None
    assert [(e.index, e.error_type) for e in errors] == [(2, "JobTimeout"), (3, "JobTimeout")]
    assert "0.5s per item" in errors[0].message and "not run" in errors[1].message
    assert naps.result(errors="none") == [0, 0, None, None]
