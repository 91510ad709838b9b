"""A trivial %%celery cell (submit -> outputs bound) beside raw Celery apply_async().get().

Both run in one process against the same embedded stack (a temporary `jupyter-celery up`), on the
same python_q workers, interleaved round by round so that machine noise hits both alike.
Prints p50/p90/p99 of each and their ratios.

    python benchmarks/cell_roundtrip.py [--rounds 300]
"""

from __future__ import annotations

import argparse
import sys
import time

from common import embedded_stack, latency_report

from jupyter_celery.core.protocol import PYTHON_Q, TASK_ECHO


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()

    with embedded_stack():
        from IPython.testing.globalipapp import start_ipython

        from jupyter_celery.kernel.client import get_client

        ip = start_ipython()
        ip.run_line_magic("load_ext", "jupyter_celery")
        ip.run_cell("n = 1")
        app = get_client().app
        cell = "%%celery\nm = n + 1\n"

        def ours() -> float:
            t = time.perf_counter()
            result = ip.run_cell(cell, silent=True)
            elapsed = time.perf_counter() - t
            if result.error_in_exec is not None:
                raise result.error_in_exec
            return elapsed

        def raw() -> float:
            t = time.perf_counter()
            value = app.send_task(TASK_ECHO, args=[1], queue=PYTHON_Q).get(timeout=30)
            elapsed = time.perf_counter() - t
            assert value == 1
            return elapsed

        for _ in range(args.warmup):
            ours()
            raw()
        samples: dict[str, list[float]] = {"raw apply_async().get()": [], "%%celery cell": []}
        for _ in range(args.rounds):
            samples["raw apply_async().get()"].append(raw())
            samples["%%celery cell"].append(ours())
        assert ip.user_ns["m"] == 2

        latency_report(samples, "%%celery cell", "raw apply_async().get()", f"{args.rounds} rounds")
        get_client().close()  # before the stack goes down
    return 0


if __name__ == "__main__":
    sys.exit(main())
