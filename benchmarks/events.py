"""Live events: progress latency, the cost of waiting, and latency with many live jobs.

Three measurements, each beside its anchor, in one run:

1. latency from a worker's ``progress()`` call to the kernel reader's dispatch (p50/p99), beside a
   raw ``XADD`` -> ``XREAD BLOCK`` between two processes at the same pace;
2. Redis commands per minute while one kernel waits on 1, 100 and 1,000 silent jobs (from
   ``INFO commandstats`` of a Redis that only the kernel talks to);
3. progress latency (p50/p99) while the reader follows 1,000 live jobs.

Targets: p50 <= 1 ms and p99 <= 5 ms; waiting <= 1 command per 2 s whatever the number of jobs;
p99 <= 20 ms with 1,000 live jobs.

    python benchmarks/events.py [--samples 300] [--wait-seconds 60]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from jupyter_celery.cli.redis_server import free_port, start_redis, wait_for_redis
from jupyter_celery.cli.stack import down, up
from jupyter_celery.core.messages import JobSpec
from jupyter_celery.core.protocol import Event, EventKind, new_job_id
from jupyter_celery.core.settings import Settings
from jupyter_celery.kernel.client import Client
from jupyter_celery.kernel.job import Job

PACE = 0.12  # seconds between two progress calls: above the batching interval, so none is merged


def pct(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[q - 1]


def show(name: str, samples: list[float]) -> dict[str, float]:
    ms = [s * 1000 for s in samples]
    p50, p99 = statistics.median(ms), pct(ms, 99)
    print(f"  {name:<44} p50 {p50:7.3f} ms   p99 {p99:7.3f} ms   ({len(ms)} samples)")
    return {"p50": p50, "p99": p99}


class Latencies:
    """Records, for progress events, the delay from the worker's call to the kernel's dispatch."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._original = Job._receive

        def receive(job: Job, event: Event) -> None:
            if event.kind is EventKind.PROGRESS:
                self.samples.append(time.time() - event.ts)
            self._original(job, event)

        Job._receive = receive  # type: ignore[method-assign]

    def restore(self) -> None:
        Job._receive = self._original  # type: ignore[method-assign]


def progress_jobs(client: Client, samples: int, jobs: int = 2) -> list[Job]:
    per_job = samples // jobs
    code = f"import time\nfor i in range({per_job}):\n    progress(i + 1, {per_job})\n    time.sleep({PACE})"
    return [
        client.submit(JobSpec(id=new_job_id(), kind="cell", code=code, owner=client.settings.owner, name="bench"))
        for _ in range(jobs)
    ]


def _raw_producer(url: str, stream: str, count: int, ready: Any) -> None:
    client = redis.Redis.from_url(url)
    ready.wait()
    for i in range(count):
        time.sleep(PACE)
        client.xadd(stream, {"ts": repr(time.time()), "i": i})


def raw_anchor(url: str, count: int) -> list[float]:
    """XADD in one process, XREAD BLOCK (from the last id) in this one, same pace."""
    stream = f"bench:raw:{os.getpid()}"
    spawn = multiprocessing.get_context("spawn")  # this process has threads: never fork it
    ready = spawn.Event()
    producer = spawn.Process(target=_raw_producer, args=(url, stream, count, ready))
    producer.start()
    client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10)
    last, out = "0-0", []
    ready.set()
    while len(out) < count:
        for _stream, entries in client.xread({stream: last}, block=4000) or []:
            for entry_id, fields in entries:
                out.append(time.time() - float(fields["ts"]))
                last = entry_id
    producer.join()
    client.delete(stream)
    return out


def live_latency(settings: Settings, samples: int, silent: int) -> tuple[list[float], list[float]]:
    client = Client(settings)
    for _ in range(silent):  # live jobs that say nothing: the reader follows them all
        job_id = new_job_id()
        record = {"id": job_id, "owner": settings.owner, "submitted": f"{time.time():.6f}", "queue": "python_q"}
        client.events.create(job_id, record, Event(EventKind.QUEUED, {"queue": "python_q"}))
        client.reader.follow(Job(job_id, client, queue="python_q"), woken=True)
    latencies = Latencies()
    try:
        for job in progress_jobs(client, samples):
            job.wait()
    finally:
        latencies.restore()
    raw = raw_anchor(settings.events_url, samples)
    client.close()
    return latencies.samples, raw


def waiting_cost(jobs: int, seconds: float, base: Path) -> float:
    """Commands per minute on a Redis that only this kernel talks to, while it waits on ``jobs`` silent jobs."""
    port = free_port()
    proc = start_redis(base / f"wait-{jobs}", port, persistent=False)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_redis(url, proc)
    try:
        store = (base / "store").as_uri()
        settings = Settings(broker_url=url, result_url=url, events_url=url, store_url=store, owner="bench")
        client = Client(settings)
        for _ in range(jobs):
            job_id = new_job_id()
            record = {"id": job_id, "owner": "bench", "submitted": f"{time.time():.6f}", "queue": "python_q"}
            client.events.create(job_id, record, Event(EventKind.QUEUED, {"queue": "python_q"}))
            client.reader.follow(Job(job_id, client, queue="python_q"))
        time.sleep(settings.block_seconds * 2)  # let the reader settle into its steady state
        probe = redis.Redis.from_url(url)
        before = probe.info("commandstats")
        time.sleep(seconds)  # the measurement window: we count what the kernel sends meanwhile
        after = probe.info("commandstats")
        client.close()
        calls = sum(v["calls"] for v in after.values()) - sum(v["calls"] for v in before.values())
        calls -= 1  # the INFO call itself
        return calls * 60.0 / seconds
    finally:
        proc.terminate()
        proc.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=300, help="progress events per latency measurement")
    parser.add_argument("--wait-seconds", type=float, default=60.0, help="measurement window of the waiting cost")
    parser.add_argument("--latency-only", action="store_true", help="skip the waiting-cost measurement")
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="jc-bench-events-"))
    for name in [k for k in os.environ if k.startswith("JUPYTER_CELERY_")]:
        del os.environ[name]
    os.environ["JUPYTER_CELERY_STATE_DIR"] = str(base / "stack")
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[attr-defined]
    print(f"events benchmark on {os.cpu_count()} CPUs, {args.samples} samples per latency run")

    print("1. progress() on a worker -> dispatch in the kernel, beside raw XADD -> XREAD BLOCK")
    if up(base / "stack", detach=True, echo=lambda _line: None) != 0:
        print("could not start the stack", file=sys.stderr)
        return 1
    try:
        settings = Settings.from_env()
        ours, raw = live_latency(settings, args.samples, silent=0)
        a = show("jupyter-celery (worker progress -> Job)", ours)
        r = show("raw XADD -> XREAD BLOCK", raw)
        print(f"  ratio p50 {a['p50'] / r['p50']:.2f}, p99 {a['p99'] / r['p99']:.2f}; "
              f"target p50 <= 1 ms: {'met' if a['p50'] <= 1 else 'NOT met'}, "
              f"p99 <= 5 ms: {'met' if a['p99'] <= 5 else 'NOT met'}")  # fmt: skip

        print("3. the same with 1,000 live (silent) jobs followed by the reader")
        ours, raw = live_latency(settings, args.samples, silent=1000)
        a = show("jupyter-celery, 1,000 live jobs", ours)
        show("raw XADD -> XREAD BLOCK (same run)", raw)
        print(f"  target p99 <= 20 ms: {'met' if a['p99'] <= 20 else 'NOT met'}")
    finally:
        down(base / "stack", echo=lambda _line: None)

    if args.latency_only:
        return 0
    print(f"2. Redis commands per minute while one kernel waits ({args.wait_seconds:g} s windows)")
    for jobs in (1, 100, 1000):
        rate = waiting_cost(jobs, args.wait_seconds, base)
        print(f"  {jobs:>5} silent jobs: {rate:6.1f} commands/min = {rate / 30:.2f} per 2 s "
              f"(target <= 1 per 2 s: {'met' if rate <= 30 else 'NOT met'})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
