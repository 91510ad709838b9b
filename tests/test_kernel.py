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


def _widget_states(nb) -> dict:
    return nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]


def test_headless_run_keeps_the_final_widget_state(running_stack):
    """nbclient (as nbval and papermill) with store_widget_state: the widget's final state is saved."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("%load_ext jupyter_celery"),
        nbformat.v4.new_code_cell(
            "%%celery -n tenfold\nimport time\nfor i in range(10):\n"
            "    progress(i + 1, 10, f'step {i + 1}')\n    print('line', i)\n    time.sleep(0.05)"
        ),
        nbformat.v4.new_code_cell("%%celery --async -o bg -n background\nprint('from the background')\nb = 1"),
        nbformat.v4.new_code_cell("import jupyter_celery as jc\nlen(jc.wait_all(timeout=120))"),
    ]
    NotebookClient(nb, kernel_name="python3", timeout=120, store_widget_state=True).execute()
    blocking = nb.cells[1].outputs
    assert "".join(o.get("text", "") for o in blocking if o.output_type == "stream") == "".join(
        f"line {i}\n" for i in range(10)
    )
    states = [s["state"] for s in _widget_states(nb).values()]
    headers = [s["value"] for s in states if s.get("_model_name") == "HTMLModel"]
    assert any("tenfold" in h and "succeeded" in h for h in headers), headers
    bars = [s for s in states if s.get("_model_name") == "FloatProgressModel"]
    assert any(b["value"] == 10 and b["max"] == 10 and b["bar_style"] == "success" for b in bars), bars
    assert any(s.get("_model_name") == "ButtonModel" and s.get("disabled") for s in states)
    logs = [s for s in states if s.get("_model_name") == "OutputModel"]
    texts = ["".join(o.get("text", "") for o in log.get("outputs", [])) for log in logs]
    assert "from the background\n" in texts, "the async job's output is in its widget's log"
    assert any("background" in h and "succeeded" in h for h in headers), headers


def test_reattach_after_a_kernel_restart(kernel, stack):
    out = kernel.run(
        "%%celery --async -o j\nimport time\nfor i in range(30):\n    progress(i + 1, 30)\n    print(i)\n"
        "    time.sleep(0.1)\nfinal = 'ok'"
    )
    assert out.error is None, out.traceback
    job_id = kernel.value("j.id").strip("'")
    kernel.run("import time\nwhile not any(e.kind.value == 'stdout' for e in j.events()): time.sleep(0.05)")
    before = kernel.value("[(e.id, e.kind.value, e.fields) for e in j.events()]")
    kernel.manager.restart_kernel(now=True)
    kernel.client.wait_for_ready(timeout=60)
    kernel.run("%load_ext jupyter_celery")
    assert kernel.value("'final' in globals()") == "False"
    out = kernel.run(f"%celery_attach {job_id} --wait")
    assert out.error is None, out.traceback
    assert kernel.value("final") == "'ok'"
    kernel.run("import jupyter_celery as jc")
    replayed = kernel.value(f"[(e.id, e.kind.value, e.fields) for e in jc.attach({job_id!r}).events()]")
    assert replayed.startswith(before[:-1])  # the live events are replayed identically, then the rest
    assert kernel.value(f"jc.attach({job_id!r}).state") == "'succeeded'"


def test_two_hundred_async_jobs_in_one_kernel(kernel, stack):
    out = kernel.run(
        "import jupyter_celery as jc\n"
        "for k in range(200):\n"
        "    display(get_ipython().run_cell_magic('celery', f'--async -j h{k} -i k', 'doubled = k * 2'))\n"
        "jc.wait_all(timeout=600)\n"
        "handles = [globals()[f'h{k}'] for k in range(200)]\n"
        "[h.result()['doubled'] for h in handles] == [2 * k for k in range(200)], {h.state for h in handles}",
        timeout=600,
    )
    assert out.error is None, out.traceback
    assert out.result == "(True, {'succeeded'})"
    assert len(out.displays) == 200  # one live widget per job
    # widget updates are throttled: a bounded number of messages per widget, whatever the event rate
    assert out.counts.get("comm_msg", 0) < 200 * 15, out.counts
