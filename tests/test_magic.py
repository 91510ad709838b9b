"""%%celery through an in-process IPython shell, against the real Redis and real workers."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

from jupyter_celery.core.errors import (
    CellSyntaxError,
    EncodingError,
    JobFailed,
    JobTimeout,
    RemoteError,
)
from jupyter_celery.core.protocol import Keys
from jupyter_celery.kernel.client import get_client


def run(ip, cell):
    result = ip.run_cell(cell)
    return result


def jobs_of_owner(stack):
    return stack.redis.zrange(Keys().owner_jobs("tester"), 0, -1)


def last_job_events(stack):
    (job_id,) = jobs_of_owner(stack)[-1:]
    return get_client().events.history(job_id)


def test_the_getting_started_cell(ip, stack, capsys):
    ip.run_cell("n = 10")
    result = run(
        ip,
        "%%celery\n"
        "import os\n"
        "total = sum(range(n))\n"
        "pid = os.getpid()\n"
        'print("computed on", os.uname().nodename)\n'
        "total * 2\n",
    )
    assert result.error_in_exec is None
    assert result.result == 90
    assert ip.user_ns["total"] == 45
    assert ip.user_ns["pid"] != os.getpid()
    assert isinstance(ip.user_ns["os"], type(os))  # a module: not brought back, but the kernel has its own
    assert "computed on " + os.uname().nodename in capsys.readouterr().out


@pytest.mark.parametrize(
    "value",
    [
        0,
        -(2**80),
        3.5,
        "text with ünicode",
        True,
        None,
        [1, "a", [2.5, None]],
        {"a": {"b": [1, 2]}, "c": "d"},
        (1, 2),
        {1: "int key"},
        {1, 2, 3},
        b"bytes",
        float("nan"),
    ],
    ids=repr,
)
def test_values_round_trip(ip, stack, value):
    ip.user_ns["v"] = value
    result = run(ip, "%%celery\nw = v\nkind = type(v).__name__")
    assert result.error_in_exec is None
    w = ip.user_ns["w"]
    assert type(w) is type(value)
    assert ip.user_ns["kind"] == type(value).__name__
    if isinstance(value, float) and math.isnan(value):
        assert math.isnan(w)
    else:
        assert w == value


def test_numpy_array_round_trip(ip, stack):
    ip.user_ns["arr"] = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert run(ip, "%%celery\ndoubled = arr * 2").error_in_exec is None
    np.testing.assert_array_equal(ip.user_ns["doubled"], np.arange(12, dtype=np.float32).reshape(3, 4) * 2)
    assert ip.user_ns["doubled"].dtype == np.float32


def test_large_array_goes_through_the_store(ip, stack):
    ip.user_ns["big"] = np.ones(200_000)  # 1.6 MB, above the 32 KB inline limit
    assert run(ip, "%%celery\ns = float(big.sum())\nbig2 = big + 1").error_in_exec is None
    assert ip.user_ns["s"] == 200_000.0
    assert ip.user_ns["big2"][0] == 2.0
    (job_id,) = jobs_of_owner(stack)
    objects = get_client().events.job_objects(job_id)  # the input and the output, by key
    assert len(objects) == 2
    assert all(k.startswith("tester/objects/") and k.endswith(".pkl") for k in objects)
    assert all(get_client().store.exists(k) for k in objects)


def test_notebook_class_and_lambda_travel_both_ways(ip, stack):
    ip.run_cell(
        "class Point:\n"
        "    def __init__(self, x, y):\n"
        "        self.x, self.y = x, y\n"
        "    def norm2(self):\n"
        "        return self.x ** 2 + self.y ** 2\n"
        "p = Point(3, 4)\n"
        "square = lambda t: t * t\n"
    )
    result = run(
        ip,
        "%%celery\nn2 = p.norm2()\nsq = square(7)\nq = Point(1, 1)\ncube = lambda t: t ** 3\n",
    )
    assert result.error_in_exec is None
    assert ip.user_ns["n2"] == 25
    assert ip.user_ns["sq"] == 49
    assert ip.user_ns["q"].norm2() == 2
    assert ip.user_ns["cube"](2) == 8


def test_inputs_and_outputs_options_are_exact(ip, stack):
    ip.user_ns.update(a=2, b=3, unrelated=object())
    ip.user_ns.pop("c", None)
    ip.user_ns.pop("tmp", None)
    result = run(ip, "%%celery -i a,b -o c\nc = a * b\ntmp = c + 1\n")
    assert result.error_in_exec is None
    assert ip.user_ns["c"] == 6
    assert "tmp" not in ip.user_ns
    spec_inputs = last_job_events(stack)  # the job ran
    assert spec_inputs[-1].kind.value == "succeeded"


def test_strict_output_that_is_not_assigned_fails(ip, stack):
    result = run(ip, "%%celery -o missing\nx = 1\n")
    assert isinstance(result.error_in_exec, JobFailed)
    assert "'missing'" in str(result.error_in_exec)


def test_unpicklable_auto_output_is_skipped_with_a_warning(ip, stack, capsys):
    result = run(ip, "%%celery\nimport threading\nlock = threading.Lock()\nok = 1\n")
    assert result.error_in_exec is None
    assert ip.user_ns["ok"] == 1
    assert "'lock' was not brought back" in capsys.readouterr().err


def test_queue_routing_both_ways(ip, stack):
    assert run(ip, "%%celery -q circuit_q\nwhere = 'circuit'\n").error_in_exec is None
    started = [e for e in last_job_events(stack) if e.kind.value == "started"]
    assert started[0].fields["worker"] == "circuit_q@test"
    stack.clean()
    assert run(ip, "%%celery -q python_q\nwhere = 'python'\n").error_in_exec is None
    started = [e for e in last_job_events(stack) if e.kind.value == "started"]
    assert started[0].fields["worker"] == "python_q@test"


def test_unknown_queue_is_a_usage_error(ip, stack):
    result = run(ip, "%%celery -q nope_q\nx = 1\n")
    assert result.error_in_exec is not None
    assert jobs_of_owner(stack) == []


def test_syntax_error_is_raised_and_nothing_is_submitted(ip, stack):
    result = run(ip, "%%celery\nx = 1\ny = = 2\n")
    error = result.error_in_exec
    assert isinstance(error, CellSyntaxError)
    assert error.lineno == 3  # the cell's third line, counting the %%celery line
    assert jobs_of_owner(stack) == []
    assert stack.redis.llen("python_q") == 0


def test_unencodable_input_is_named_and_nothing_is_submitted(ip, stack):
    ip.run_cell("gen = (i for i in range(3))")
    result = run(ip, "%%celery\nitems = list(gen)\n")
    error = result.error_in_exec
    assert isinstance(error, EncodingError)
    assert error.name == "gen"
    assert "'gen'" in str(error)
    assert jobs_of_owner(stack) == []


def test_remote_exception_points_at_the_cell(ip, stack):
    result = run(ip, "%%celery\nx = 1\n\ny = x / 0\n")
    error = result.error_in_exec
    assert isinstance(error, RemoteError)
    assert error.ename == "ZeroDivisionError"
    assert error.evalue == "division by zero"
    assert ", line 4, in <module>" in error.traceback
    assert "y = x / 0" in error.traceback
    assert "jupyter_celery" not in error.traceback  # worker internals are cut off
    rendered = "\n".join(error._render_traceback_())
    assert "ZeroDivisionError" in rendered
    assert "python_q@test" in rendered
    # the kernel stays usable
    assert run(ip, "%%celery\nz = 5\n").error_in_exec is None
    assert ip.user_ns["z"] == 5


def test_remote_exception_inside_a_function_of_the_cell(ip, stack):
    result = run(ip, "%%celery\ndef f(v):\n    return v['missing']\nf({})\n")
    error = result.error_in_exec
    assert isinstance(error, RemoteError)
    assert error.ename == "KeyError"
    assert ", line 4, in <module>" in error.traceback
    assert ", line 3, in f" in error.traceback


def test_timeout_fails_clearly_and_the_worker_stays_healthy(ip, stack):
    result = run(ip, "%%celery --timeout 1\nimport time\ntime.sleep(60)\n")
    error = result.error_in_exec
    assert isinstance(error, JobTimeout)
    assert "time limit of 1s" in str(error)
    again = run(ip, "%%celery\nafter = 'ok'\n")
    assert again.error_in_exec is None
    assert ip.user_ns["after"] == "ok"


def test_final_expression_that_cannot_be_pickled_is_shown_as_its_repr(ip, stack):
    result = run(ip, "%%celery\nimport threading\nthreading.Lock()\n")
    assert result.error_in_exec is None
    assert "unlocked" in repr(result.result)


def test_help_shows_options_and_examples(ip):
    doc = ip.find_cell_magic("celery").__doc__
    for needle in ("--queue", "--inputs", "--outputs", "--timeout", "--name", "Examples", "circuit_q"):
        assert needle in doc
