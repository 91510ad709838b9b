"""%%celery with DataFrames on a stack whose store is S3 (moto's server or MinIO), observed on the wire."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from jupyter_celery.core.errors import JobFailed
from jupyter_celery.core.messages import JobSpec
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import new_job_id
from jupyter_celery.core.settings import ENV_PREFIX
from jupyter_celery.kernel.client import Client, get_client, reset_client
from tests.s3proxy import Fault


@pytest.fixture
def s3_ip(ip, s3_stack, s3) -> Iterator[object]:
    """The session's IPython, its %%celery pointed at the S3 stack for the test."""
    saved = {k: os.environ.get(k) for k in s3_stack.env}
    os.environ.update(s3_stack.env)
    reset_client()
    s3.proxy.clear()
    try:
        yield ip
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        reset_client()
        s3_stack.clean()
        s3.proxy.clear()


def frame(n: int = 200_000) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {"x": rng.random(n), "k": rng.integers(0, 50, n), "s": pd.array([f"r{i % 13}" for i in range(n)], dtype="str")},
        index=pd.date_range("2026-01-01", periods=n, freq="s", tz="UTC", name="at"),
    )


def test_frames_travel_through_s3_both_ways_exactly(s3_ip, s3):
    data = frame(100_000)  # below one part (5 MiB): one GET request per download
    s3_ip.user_ns["data"] = data
    result = s3_ip.run_cell("%%celery\nsame = data\nsums = data.groupby('k').x.sum()\n")
    assert result.error_in_exec is None
    pd.testing.assert_frame_equal(s3_ip.user_ns["same"], data, check_exact=True)
    pd.testing.assert_series_equal(s3_ip.user_ns["sums"], data.groupby("k").x.sum(), check_exact=True)
    store = get_client().store
    assert store.describe().startswith("s3://jupyter-celery-test/stack at http://127.0.0.1")
    assert any(k.endswith(".arrow") for k in store.keys("tester/objects/"))
    # one download: the worker's. `same` has the bytes the kernel sent, so the kernel does not fetch them back
    assert len(s3.proxy.seen("GET", "/jupyter-celery-test/stack/tester/objects/")) == 1
    same = s3_ip.user_ns["same"]
    same.iloc[0, 0] = -1.0  # an independent frame (copy-on-write), not the notebook's
    assert data.iloc[0, 0] != -1.0


def test_resubmission_uploads_nothing(s3_ip, s3):
    s3_ip.user_ns["data"] = frame(300_000)
    cell = "%%celery\nsame = data\n"
    assert s3_ip.run_cell(cell).error_in_exec is None
    s3.proxy.clear()
    assert s3_ip.run_cell(cell).error_in_exec is None
    uploads = s3.proxy.seen("PUT") + s3.proxy.seen("POST")
    assert uploads == []  # neither the input again, nor the (identical) output
    assert s3.proxy.seen("HEAD", "/tester/objects/")  # what was asked instead


def test_an_input_not_used_is_never_downloaded(s3_stack, s3):
    client = Client(s3_stack.settings())
    try:
        job_id = new_job_id()
        tag = ObjectTag("tester", job_id, "input")
        inputs = {"big": client.codec.encode("big", frame(), tag), "flag": client.codec.encode("flag", False, tag)}
        spec = JobSpec(
            id=job_id, kind="cell", code="if flag:\n    n = len(big)\nok = True\n", owner="tester", inputs=inputs,
            outputs=("ok", "n"),
        )  # fmt: skip
        s3.proxy.clear()
        job = client.submit(spec)
        assert job.outputs(timeout=120, strict=False)[0] == {"ok": True}
        assert s3.proxy.seen("GET", inputs["big"]["key"]) == []
        assert s3.proxy.seen("HEAD", inputs["big"]["key"]) == []
    finally:
        client.close()


def test_a_store_failure_on_the_worker_is_a_job_failure(s3_ip, s3):
    s3.proxy.inject(Fault(method="PUT", contains="/tester/objects/", status=403, code="AccessDenied", times=100))
    result = s3_ip.run_cell("%%celery\nimport numpy as np\nout = np.ones(100_000)\n")
    error = result.error_in_exec
    assert isinstance(error, JobFailed)
    assert "cannot write" in str(error)
    assert "in store s3://jupyter-celery-test/stack at http://127.0.0.1" in str(error)
    assert "access denied" in str(error)
    events = get_client().events.history(error.job_id)
    assert events[-1].fields["reason"] == "store"


def test_an_unreachable_store_fails_in_the_kernel_before_submit(s3_ip, s3_stack, monkeypatch):
    from jupyter_celery.cli.redis_server import free_port

    monkeypatch.setenv(ENV_PREFIX + "S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    reset_client()
    s3_ip.user_ns["data"] = frame(10_000)
    result = s3_ip.run_cell("%%celery\nn = len(data)\n")
    assert "cannot send variable 'data'" in str(result.error_in_exec)
    assert "unreachable" in str(result.error_in_exec)
    assert s3_stack.redis.llen("python_q") == 0
