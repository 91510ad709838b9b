"""What the benchmarks share: a temporary embedded stack (`jupyter-celery up` in a temp dir, `down`
at the end; settings from the environment are cleared first, so a benchmark measures this stack
only) and the latency report of our path beside its raw-Celery anchor.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jupyter_celery.cli.stack import down, up


@contextmanager
def embedded_stack() -> Iterator[Path]:
    """Start the stack (redis-server, a worker per queue, beat, a local store); yield its state dir,
    removed at the end."""
    state = Path(tempfile.mkdtemp(prefix="jc-bench-"))
    for name in [k for k in os.environ if k.startswith("JUPYTER_CELERY_")]:
        del os.environ[name]
    os.environ["JUPYTER_CELERY_STATE_DIR"] = str(state)
    if up(state, detach=True, echo=lambda _line: None) != 0:
        raise SystemExit("could not start the stack")
    try:
        yield state
    finally:
        down(state, echo=lambda _line: None)
        shutil.rmtree(state, ignore_errors=True)  # Redis data, logs and stored values of the run


def percentiles(samples: list[float]) -> dict[str, float]:
    qs = statistics.quantiles(samples, n=100, method="inclusive")
    return {"p50": statistics.median(samples), "p90": qs[89], "p99": qs[98]}


def latency_report(samples: dict[str, list[float]], ours: str, anchor: str, title: str) -> None:
    """Print p50/p90/p99 of each path (milliseconds) and the ratios of ``ours`` to ``anchor``."""
    stats = {name: percentiles(s) for name, s in samples.items()}
    width = max(len(name) for name in stats) + 4
    print(f"{title}, interleaved, on {os.cpu_count()} CPUs (milliseconds)")
    print(f"{'path':<{width}}{'p50':>9}{'p90':>9}{'p99':>9}")
    for name, st in stats.items():
        print(f"{name:<{width}}" + "".join(f"{st[p] * 1000:>9.2f}" for p in ("p50", "p90", "p99")))
    ratio = {p: stats[ours][p] / stats[anchor][p] for p in ("p50", "p90", "p99")}
    print(f"{'ratio (ours / raw)':<{width}}" + "".join(f"{ratio[p]:>9.2f}" for p in ("p50", "p90", "p99")))
    print(f"target p50 ratio <= 1.25: {'met' if ratio['p50'] <= 1.25 else 'NOT met'}")
