"""``jupyter-celery gc``: unreferenced old job objects go; live jobs' objects and named datasets stay."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from jupyter_celery.core.collector import collect, parse_duration
from jupyter_celery.core.datasets import Catalog, human_size
from jupyter_celery.core.messages import JobSpec
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import Keys, new_job_id
from jupyter_celery.core.store import open_store
from jupyter_celery.kernel.client import get_client

from .waiting import wait_until

DAY = 86400
OWNER = "gc-tester"  # objects of its own: other tests leave theirs in the session's store


def run_job(code: str, inputs: dict) -> tuple[str, set[str]]:
    """Run a cell job to its end; its id and the store keys it refers to."""
    client = get_client()
    job_id = new_job_id()
    encoded = {n: client.codec.encode(n, v, ObjectTag(OWNER, job_id, "input")) for n, v in inputs.items()}
    spec = JobSpec(id=job_id, kind="cell", code=code, owner=OWNER, inputs=encoded, outputs=("out",))
    job = client.submit(spec, objects=[k for e in encoded.values() for k in client.codec.keys_of(e)])
    job.manifest(timeout=120)
    return job_id, client.events.job_objects(job_id)


def age(stack, key: str, days: float) -> None:
    """Make a stored object look written ``days`` ago."""
    path = stack.base / "store" / key
    then = time.time() - days * DAY
    os.utime(path, (then, then))


def expire(stack, job_id: str) -> None:
    """Let a job's record lapse (as JUPYTER_CELERY_JOB_TTL does), with Redis's own expiry."""
    keys = Keys()
    for key in (keys.job(job_id), keys.events(job_id), keys.job_objects(job_id)):
        stack.redis.pexpire(key, 1)
    wait_until(lambda: not stack.redis.exists(keys.job_objects(job_id)), what="the job's record to expire")


def gc(stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_CELERY_")} | stack.env
    return subprocess.run(
        [sys.executable, "-m", "jupyter_celery", "gc", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_gc_deletes_only_old_unreferenced_job_objects(stack):
    store = get_client().store
    gone_job, gone = run_job("out = data * 2", {"data": np.arange(100_000)})  # an input and an output
    _live_job, live = run_job("out = len(data)", {"data": np.arange(100_001)})
    recent_job, recent = run_job("out = len(data)", {"data": np.arange(100_002)})
    assert len(gone) == 2
    assert len(live) == 1
    dataset = Catalog(store, OWNER).put(pd.DataFrame({"v": np.arange(10_000)}), "keep-me")
    for key in (*gone, *live, dataset.key):
        age(stack, key, 8)
    expire(stack, gone_job)
    expire(stack, recent_job)  # unreferenced, but written just now
    with store.staging() as partial:  # what an interrupted writer leaves behind
        partial.write_bytes(b"x" * 1000)
        os.link(partial, partial.with_name("left-behind.part"))
    left = partial.with_name("left-behind.part")
    os.utime(left, (time.time() - 8 * DAY,) * 2)

    dry = gc(stack, "--older-than", "7d", "--dry-run", "--owner", OWNER)
    assert dry.returncode == 0, dry.stderr
    assert "would delete:" in dry.stdout
    assert "2 object(s)" in dry.stdout.split("would delete:")[1].splitlines()[0]
    assert "dry run: nothing was deleted" in dry.stdout
    assert all(store.exists(k) for k in (*gone, *live, *recent))

    done = gc(stack, "--older-than", "7d", "--owner", OWNER)
    assert done.returncode == 0, done.stderr
    report = {k.strip(): v.strip() for k, v in (line.split(": ", 1) for line in done.stdout.splitlines()[1:])}
    assert report["kept, used by a job"] == f"1 object(s), {human_size(sum(store.stat(k).size for k in live))}"
    assert report["kept, newer than 7d"].startswith("1 object(s)")
    assert report["deleted"].startswith("2 object(s)")
    assert report["named datasets"].startswith("1 object(s)")
    assert report["partial writes, deleted"] == "1 object(s), 1.0 KB"
    assert not any(store.exists(k) for k in gone)
    assert all(store.exists(k) for k in (*live, *recent, dataset.key))
    assert not left.exists()


def test_gc_keeps_what_a_job_refers_to_again(stack):
    """Content addressing: an old object that a new job sends again is that job's too."""
    store = get_client().store
    data = np.arange(123_456)
    old_job, (key,) = run_job("out = len(data)", {"data": data})
    age(stack, key, 30)
    expire(stack, old_job)
    _new_job, again = run_job("out = len(data)", {"data": data})
    assert again == {key}
    result = collect(store, get_client().events.referenced_objects, 7 * DAY, owner=OWNER)
    assert key not in result.deleted_keys
    assert store.exists(key)


def test_gc_on_s3(s3, s3_store_url):
    store = open_store(s3_store_url, s3_endpoint_url=s3.proxy.url)
    for i in range(3):
        store.put(f"ada/objects/0{i}/0{i}.pkl", b"x" * 10, ObjectTag("ada", f"job{i}").metadata())
    store.put("ada/datasets/d.parquet", b"p")
    result = collect(store, lambda: {"ada/objects/00/00.pkl"}, 0)
    assert sorted(result.deleted_keys) == ["ada/objects/01/01.pkl", "ada/objects/02/02.pkl"]
    assert sorted(store.keys()) == ["ada/datasets/d.parquet", "ada/objects/00/00.pkl"]
    assert s3.proxy.seen("POST", "?delete")  # one batch request, not one per object


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800),
                                               ("2w", 1209600), ("1d12h", 129600), ("0s", 0)])  # fmt: skip
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "7 days", "d7", "-1d"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_gc_refuses_a_bad_duration(stack):
    result = gc(stack, "--older-than", "soon")
    assert result.returncode == 2
    assert "not a duration: 'soon'" in result.stderr
