"""jc.submit().result() beside raw Celery apply_async().get(), and jc.map over 10,000 trivial items
beside a raw Celery group of 10,000 tasks and Dask's client.map on a LocalCluster of the same size.

All in one process against one embedded stack (a temporary `jupyter-celery up`: python_q has two
prefork children), interleaved round by round so that machine noise hits every path alike. The
Dask cluster has as many single-threaded worker processes as python_q has children, and is
started before the first round (its start-up is not measured; neither is the stack's).

    pip install -e ".[bench]"
    python benchmarks/functions.py [--rounds 500] [--map-rounds 5] [--items 10000]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from typing import Any

from common import embedded_stack, latency_report

from jupyter_celery.core.protocol import PYTHON_Q, TASK_ECHO
from jupyter_celery.core.queues import PROFILES


def inc(x: int) -> int:
    """The submitted function: defined here, in __main__, so it travels by value like a notebook's."""
    return x + 1


def timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> int:  # noqa: PLR0915 - one linear script
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=500, help="submit rounds")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--map-rounds", type=int, default=5)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--no-dask", action="store_true")
    args = parser.parse_args()

    dask_client = cluster = None
    with embedded_stack():
        try:
            from celery import group

            import jupyter_celery as jc
            from jupyter_celery.kernel.client import get_client

            app = get_client().app
            workers = PROFILES[PYTHON_Q].concurrency
            items = list(range(args.items))
            expected = [x + 1 for x in items]

            def ours_submit() -> None:
                assert jc.submit(inc, 1).result(timeout=30) == 2

            def raw_submit() -> None:
                assert app.send_task(TASK_ECHO, args=[1], queue=PYTHON_Q).get(timeout=30) == 1

            def ours_map() -> None:
                assert jc.map(inc, items).result(timeout=600) == expected

            def raw_group() -> None:
                signatures = [app.signature(TASK_ECHO, args=[x], queue=PYTHON_Q) for x in items]
                assert group(signatures).apply_async().get(timeout=600) == items

            map_paths = {"jc.map": ours_map, "raw Celery group": raw_group}
            if not args.no_dask:
                from dask.distributed import Client, LocalCluster

                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.CRITICAL,  # its workers log heartbeat errors while the cluster closes
                )
                dask_client = Client(cluster)

                def dask_map() -> None:
                    futures = dask_client.map(inc, items, pure=False)
                    assert dask_client.gather(futures) == expected

                map_paths["Dask client.map"] = dask_map

            for _ in range(args.warmup):
                ours_submit()
                raw_submit()
            for path in map_paths.values():  # warm up each map path once (imports, connections, pools)
                path()

            submit_samples: dict[str, list[float]] = {"raw apply_async().get()": [], "jc.submit().result()": []}
            for _ in range(args.rounds):
                submit_samples["raw apply_async().get()"].append(timed(raw_submit))
                submit_samples["jc.submit().result()"].append(timed(ours_submit))
            map_samples: dict[str, list[float]] = {name: [] for name in map_paths}
            for _ in range(args.map_rounds):
                for name, path in map_paths.items():
                    map_samples[name].append(timed(path))

            latency_report(
                submit_samples, "jc.submit().result()", "raw apply_async().get()", f"submit: {args.rounds} rounds"
            )
            print()
            print(
                f"map of {args.items} trivial items: {args.map_rounds} rounds, interleaved, {workers} worker processes"
            )
            rates = {name: args.items / statistics.median(s) for name, s in map_samples.items()}
            print(f"{'path':<28}{'median s':>10}{'items/s':>12}")
            for name, s in map_samples.items():
                print(f"{name:<28}{statistics.median(s):>10.3f}{rates[name]:>12,.0f}")
            for anchor in [n for n in rates if n != "jc.map"]:
                speedup = rates["jc.map"] / rates[anchor]
                print(f"jc.map / {anchor}: {speedup:.1f}x (target >= 10x: {'met' if speedup >= 10 else 'NOT met'})")
        finally:
            if dask_client is not None:
                dask_client.close()
            if cluster is not None:
                cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
