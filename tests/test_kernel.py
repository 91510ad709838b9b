"""%%celery in a real ipykernel (jupyter_client), as a notebook runs it."""

from __future__ import annotations

import os


def test_cell_runs_on_a_worker_and_binds_its_results(kernel, stack):
    kernel.run("n = 10")
    out = kernel.run(
        "%%celery\n"
        "import os\n"
        "total = sum(range(n))\n"
        "pid = os.getpid()\n"
        'print("computed on", os.uname().nodename)\n'
        "total * 2\n"
    )
    assert out.error is None, out.traceback
    assert out.result == "90"  # displayed as the cell's result, like a normal cell
    assert out.stdout == f"computed on {os.uname().nodename}\n"
    assert kernel.value("total") == "45"
    kernel_pid = kernel.value("__import__('os').getpid()")
    assert kernel.value("pid") != kernel_pid


def test_remote_error_shows_the_worker_traceback(kernel, stack):
    out = kernel.run("%%celery\na = 1\nb = a / 0\n")
    assert out.error is not None
    assert out.error["ename"] == "RemoteError"
    tb = out.traceback
    assert "ZeroDivisionError: division by zero" in tb
    assert "line 3, in <module>" in tb
    assert "b = a / 0" in tb
    assert "magics.py" not in tb  # no kernel-side frames of jupyter-celery
    assert kernel.value("1 + 1") == "2"  # the kernel stays usable


def test_syntax_error_looks_like_one(kernel, stack):
    out = kernel.run("%%celery\nfor\n")
    assert out.error is not None
    assert "SyntaxError: invalid syntax" in out.traceback
    assert "line 2" in out.traceback


def test_magic_help(kernel):
    out = kernel.run("%%celery?\n")
    text = "".join(str(p.get("data", {}).get("text/plain", "")) for p in out.payload)
    assert "--queue" in text
    assert "Examples" in text
