"""Functions on real workers: jc.submit, @jc.remote, retries, time limits, as_completed / wait / gather.

Functions are defined in an IPython cell (module ``__main__``), as in a notebook: they travel by
value. Maps are in test_map.py.
"""

from __future__ import annotations

import base64
import inspect

import numpy as np
import pandas as pd
import pytest

import jupyter_celery as jc
from jupyter_celery.core.errors import EncodingError, JobTimeout, RemoteError
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import EventKind, Keys
from jupyter_celery.kernel.client import get_client

from .waiting import wait_until


def define(ip, code: str) -> dict:
    """Run ``code`` as a notebook cell; return the notebook's namespace."""
    result = ip.run_cell(code)
    assert result.error_in_exec is None, result.error_in_exec
    assert result.error_before_exec is None, result.error_before_exec
    return ip.user_ns


def kinds(job) -> list[str]:
    return [e.kind.value for e in job.events()]


def test_notebook_defined_function_and_class(ip, stack):
    ns = define(
        ip,
        "class Point:\n"
        "    def __init__(self, x, y):\n        self.x, self.y = x, y\n"
        "    def scaled(self, k):\n        return Point(self.x * k, self.y * k)\n"
        "def scale(p, k=2):\n    import os\n    return p.scaled(k), os.getpid()\n",
    )
    job = jc.submit(ns["scale"], ns["Point"](1, 2), k=3)
    point, pid = job.result(timeout=60)
    assert (point.x, point.y) == (3, 6)
    assert type(point).__name__ == "Point"
    assert pid != __import__("os").getpid()  # it ran on a worker
    assert job.kind == "function" and job.name == "scale"
    assert kinds(job) == ["queued", "started", "succeeded"]
    with pytest.raises(TypeError, match="function job"):
        job.bind({})


def test_closure_over_a_numpy_array(ip, stack):
    ns = define(ip, "import numpy as np\nweights = np.array([0.5, 1.5, 2.0])\ndef weigh(i):\n    return weights * i\n")
    assert np.array_equal(jc.submit(ns["weigh"], 2).result(timeout=60), np.array([1.0, 3.0, 4.0]))


def test_function_of_an_installed_module_goes_by_reference(stack):
    encoded = get_client().codec.encode("function", np.linalg.norm, ObjectTag("tester"))
    assert encoded["enc"] == "pickle"
    data = base64.b64decode(encoded["data"])
    assert b"numpy" in data and b"norm" in data
    assert len(data) < 200  # the name, not the code
    assert jc.submit(np.linalg.norm, [3.0, 4.0]).result(timeout=60) == 5.0


def test_large_argument_and_result_travel_through_the_store_by_key(ip, stack):
    ns = define(ip, "def double(a):\n    return a * 2\n")
    big = np.arange(1_000_000, dtype=np.float64)  # 8 MB: far above the inline limit
    job = jc.submit(ns["double"], big)
    doubled = job.result(timeout=120)
    assert np.array_equal(doubled, big * 2)
    client = get_client()
    value = job.manifest()["value"]
    assert value["enc"] == "pickle" and "data" not in value  # the message carried its key only
    objects = client.events.redis.smembers(Keys().job_objects(job.id))  # what gc keeps for the job
    assert value["key"] in objects
    assert len(objects) == 2  # the argument, sent by key, and the result
    assert all(client.store.exists(key) for key in objects)


def test_dataframe_argument_and_result_by_key_and_a_closure_over_one(ip, stack):
    ns = define(
        ip,
        "import numpy as np, pandas as pd\n"
        "prices = pd.DataFrame({'sku': np.arange(1000), 'price': np.linspace(1, 2, 1000)})\n"
        "def score(frame, threshold):\n    return (frame.value > threshold).mean()\n"
        "def priced(frame):\n    return frame.merge(prices, on='sku').assign(total=lambda f: f.qty * f.price)\n",
    )
    frame = pd.DataFrame(
        {"sku": np.arange(50_000) % 1000, "qty": np.arange(50_000) % 7, "value": np.linspace(0, 1, 50_000)}
    )
    assert jc.submit(ns["score"], frame, 0.5).result(timeout=120) == pytest.approx((frame.value > 0.5).mean())
    job = jc.submit(ns["priced"], frame)  # `prices` travels with the function (a closure over a frame)
    totals = job.result(timeout=120)
    expected = frame.merge(ns["prices"], on="sku").assign(total=lambda f: f.qty * f.price)
    pd.testing.assert_frame_equal(totals, expected)
    value = job.manifest()["value"]
    assert value["enc"] == "frame" and "key" in value  # the result came back by key, as Arrow
    client = get_client()
    objects = client.events.redis.smembers(Keys().job_objects(job.id))
    assert value["key"] in objects and len(objects) == 2  # the frame argument and the result (the function is small)


def test_an_argument_that_cannot_be_sent_stops_the_submit(ip, stack):
    ns = define(ip, "import threading\nlock = threading.Lock()\ndef use(x):\n    return 1\n")
    before = len(get_client().jobs)
    with pytest.raises(EncodingError, match="arg0"):
        jc.submit(ns["use"], ns["lock"])
    assert len(get_client().jobs) == before  # nothing was submitted


def test_retry_then_success(ip, stack, tmp_path):
    marker = tmp_path / "failed-once"
    ns = define(
        ip,
        "import os\n"
        "def flaky(path):\n"
        "    if not os.path.exists(path):\n"
        "        open(path, 'w').close()\n"
        "        raise ConnectionError('service unavailable')\n"
        "    return 'ok'\n",
    )
    job = jc.submit(ns["flaky"], str(marker), retries=2, retry_delay=0.05)
    assert job.result(timeout=60) == "ok"
    assert kinds(job) == ["queued", "started", "retrying", "started", "succeeded"]
    retrying = next(e for e in job.events() if e.kind is EventKind.RETRYING)
    assert retrying.fields["attempt"] == "2"
    assert "ConnectionError: service unavailable" in retrying.fields["reason"]
    attempts = [e.fields["attempt"] for e in job.events() if e.kind is EventKind.STARTED]
    assert attempts == ["1", "2"]


def test_retries_exhausted(ip, stack):
    ns = define(ip, "def always_slow():\n    raise TimeoutError('the service did not answer')\n")
    job = jc.submit(ns["always_slow"], retries=2, retry_delay=0.01)
    with pytest.raises(RemoteError) as caught:
        job.result(timeout=60)
    assert caught.value.ename == "TimeoutError"
    assert "always_slow" in caught.value.traceback  # the user's frame, not the worker's
    assert "raise TimeoutError('the service did not answer')" in caught.value.traceback  # with its line
    assert "jupyter_celery" not in caught.value.traceback
    assert [e.fields["attempt"] for e in job.events() if e.kind is EventKind.RETRYING] == ["2", "3"]
    assert kinds(job).count("started") == 3
    assert job.state == "failed"


def test_named_exception_types_are_retried_and_others_fail_at_once(ip, stack, tmp_path):
    marker = tmp_path / "quota"
    ns = define(
        ip,
        "import os\n"
        "class QuotaExceeded(Exception):\n    pass\n"
        "def quota(path):\n"
        "    if not os.path.exists(path):\n"
        "        open(path, 'w').close()\n"
        "        raise QuotaExceeded('try later')\n"
        "    return 'done'\n"
        "def broken():\n    raise ValueError('a bug, not a transient failure')\n",
    )
    named = jc.submit(ns["quota"], str(marker), retries=1, retry_on=(ns["QuotaExceeded"],), retry_delay=0.01)
    broken = jc.submit(ns["broken"], retries=3, retry_delay=0.01)
    assert named.result(timeout=60) == "done"
    assert "retrying" in kinds(named)
    with pytest.raises(RemoteError, match="a bug"):
        broken.result(timeout=60)
    assert kinds(broken) == ["queued", "started", "failed"]  # no retry for a ValueError


def test_cancel_a_job_waiting_for_its_next_attempt(ip, stack):
    ns = define(ip, "def down():\n    raise ConnectionError('refused')\n")
    job = jc.submit(ns["down"], retries=3, retry_delay=600)  # the next attempt would wait 5-10 minutes
    wait_until(lambda: job.state == "retrying", 60, "the first attempt to fail")
    assert job.cancel()
    assert job.wait(30)
    assert job.cancelled()
    assert "waiting to be tried again" in job.terminal.fields["reason"]
    assert kinds(job).count("started") == 1


def test_soft_time_limit_raises_inside_the_function(ip, stack):
    ns = define(
        ip,
        "import time\nfrom celery.exceptions import SoftTimeLimitExceeded\n"
        "def patient():\n"
        "    try:\n        time.sleep(60)\n"
        "    except SoftTimeLimitExceeded:\n        return 'cleaned up'\n"
        "def unaware():\n    time.sleep(60)\n",
    )
    caught = jc.submit(ns["patient"], timeout=1)
    uncaught = jc.submit(ns["unaware"], timeout=1)
    assert caught.result(timeout=60) == "cleaned up"
    with pytest.raises(JobTimeout, match="time limit of 1s"):
        uncaught.result(timeout=60)


def test_hard_time_limit_fails_the_job_and_the_worker_goes_on(ip, stack):
    ns = define(
        ip,
        "import time\ndef stubborn():\n    try:\n        time.sleep(60)\n"
        "    except BaseException:\n        time.sleep(60)  # ignores the soft limit\n",
    )
    job = jc.submit(ns["stubborn"], queue="circuit_q", timeout=1)
    with pytest.raises(JobTimeout, match="hard time limit"):
        job.result(timeout=60)
    assert job.terminal.fields["reason"] == "timeout"
    assert jc.submit(pow, 2, 5, queue="circuit_q").result(timeout=60) == 32  # a new child took over


def test_remote_decorator_keeps_the_signature_and_runs_here_or_there(ip, stack):
    ns = define(
        ip,
        "import jupyter_celery as jc\n"
        "@jc.remote(queue='circuit_q', timeout=60)\n"
        "def fit(values: list, alpha: float = 0.5) -> float:\n"
        "    '''Fit a model.'''\n"
        "    return sum(values) * alpha\n",
    )
    fit = ns["fit"]
    assert str(inspect.signature(fit)) == "(values: list, alpha: float = 0.5) -> float"
    assert fit.__doc__ == "Fit a model." and fit.__name__ == "fit"
    assert fit([1, 2]) == 1.5  # a direct call runs here
    job = fit.submit([1, 2, 3], alpha=2)
    assert job.result(timeout=60) == 12
    assert job.queue == "circuit_q" and job.name == "fit"
    assert fit.options(queue="python_q").submit([1]).queue == "python_q"
    assert fit.map([[1], [2, 3]]).result(timeout=60) == [0.5, 2.5]
    assert jc.submit(fit, [4]).result(timeout=60) == 2.0  # submit() takes the decorated function too


def test_as_completed_yields_jobs_in_the_order_they_end(ip, stack, tmp_path):
    gate = tmp_path / "gate"
    ns = define(
        ip,
        "import os, time\n"
        "def gated(path):\n    while not os.path.exists(path):\n        time.sleep(0.01)\n    return 'slow'\n"
        "def quick():\n    return 'fast'\n",
    )
    slow = jc.submit(ns["gated"], str(gate))
    fast = jc.submit(ns["quick"])
    order = jc.as_completed([slow, fast], timeout=60)
    assert next(order) is fast
    assert not slow.done()
    done, not_done = jc.wait([slow, fast], timeout=0.1, return_when=jc.FIRST_COMPLETED)
    assert done == {fast} and not_done == {slow}
    gate.touch()
    assert next(order) is slow
    assert list(order) == []
    assert jc.gather([slow, fast]) == ["slow", "fast"]


def test_wait_first_exception_and_gather_errors(ip, stack, tmp_path):
    gate = tmp_path / "gate"
    ns = define(
        ip,
        "import os, time\n"
        "def gated(path):\n    while not os.path.exists(path):\n        time.sleep(0.01)\n    return 1\n"
        "def fails():\n    raise KeyError('missing')\n",
    )
    slow = jc.submit(ns["gated"], str(gate))
    bad = jc.submit(ns["fails"])
    done, not_done = jc.wait([slow, bad], timeout=60, return_when=jc.FIRST_EXCEPTION)
    assert done == {bad} and not_done == {slow}
    gate.touch()
    with pytest.raises(RemoteError, match="KeyError"):
        jc.gather([slow, bad], timeout=60)
    results = jc.gather([slow, bad], timeout=60, return_exceptions=True)
    assert results[0] == 1 and isinstance(results[1], RemoteError)
    never = jc.submit(ns["gated"], str(gate) + "-never")
    with pytest.raises(TimeoutError):
        list(jc.as_completed([never], timeout=0.2))
    never.cancel()  # leave no job behind (other tests wait for every job of the kernel)
    assert never.wait(60) and never.cancelled()


def test_a_function_job_is_rebuilt_from_its_id(ip, stack):
    ns = define(ip, "def answer():\n    return {'answer': 42}\n")
    job = jc.submit(ns["answer"])
    wait_until(job.done, 60, "the job to end")
    from jupyter_celery.core.settings import Settings
    from jupyter_celery.kernel.client import Client

    other = Client(Settings.from_env())  # another kernel: nothing in memory
    try:
        again = other.attach(job.id)
        assert again.kind == "function"
        assert again.result(timeout=5) == {"answer": 42}
    finally:
        other.close()


def test_submit_returns_while_the_function_runs(ip, stack, tmp_path):
    gate = tmp_path / "gate"
    ns = define(
        ip, "import os, time\ndef gated(path):\n    while not os.path.exists(path):\n        time.sleep(0.01)\n"
    )
    job = jc.submit(ns["gated"], str(gate))
    wait_until(lambda: job.state == "running", 60, "the job to start")
    assert job.running() and not job.done()
    with pytest.raises(TimeoutError):
        job.result(timeout=0.1)
    gate.touch()
    assert job.result(timeout=60) is None
