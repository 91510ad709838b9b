"""Functions in a real kernel: a function job rebuilt from its id after a kernel restart, and the
map's one aggregate widget."""

from __future__ import annotations

import doctest

from jupyter_celery.core import retry
from jupyter_celery.kernel import chunking

WIDGET = "application/vnd.jupyter.widget-view+json"


def test_rebuild_a_function_job_from_its_id_in_a_new_kernel(kernel, stack):
    out = kernel.run(
        "import jupyter_celery as jc\n"
        "class Summary:\n"
        "    def __init__(self, total):\n        self.total = total\n"
        "def summarise(values):\n    return Summary(sum(values))\n"
        "job = jc.submit(summarise, [1, 2, 3])\n"
        "job.result(timeout=60).total"
    )
    assert out.error is None, out.traceback
    assert out.result == "6"
    job_id = kernel.value("job.id").strip("'")
    kernel.manager.restart_kernel(now=True)
    kernel.client.wait_for_ready(timeout=60)
    assert kernel.value("'job' in globals(), 'Summary' in globals()") == "(False, False)"
    out = kernel.run(f"import jupyter_celery as jc\nagain = jc.attach({job_id!r})\nagain.kind, again.state")
    assert out.error is None, out.traceback
    assert out.result == "('function', 'succeeded')"
    # the notebook's class came back by value: the new kernel never defined it
    assert kernel.value("type(again.result()).__name__, again.result().total") == "('Summary', 6)"


def test_a_map_shows_one_aggregate_widget(kernel, stack):
    out = kernel.run(
        "import jupyter_celery as jc\n"
        "def cube(x):\n    return x ** 3\n"
        "cubes = jc.map(cube, range(2_000))\n"
        "display(cubes)\n"
        "values = cubes.result(timeout=120)\n"
        "values[:4], len(cubes.jobs) > 1"
    )
    assert out.error is None, out.traceback
    assert out.result == "([0, 1, 8, 27], True)"
    widgets = [d for d in out.displays if WIDGET in d["data"]]
    assert len(widgets) == 1  # one widget for the map, none per chunk
    header = kernel.value("cubes.view.header.value")
    assert "succeeded" in header and "2,000/2,000 items" in header
    assert "items/s" in kernel.value("cubes.view.message.value")


def test_chunk_sizing_and_retry_policy_examples_hold():
    for module in (chunking, retry):
        failures, tried = doctest.testmod(module)
        assert tried and not failures, module.__name__
