"""Worker heartbeats: which workers are alive, and which queues have a worker consuming them.

A worker refreshes ``<p>:worker:<hostname>`` every ``interval`` seconds (the key expires after four
intervals) and scores itself in ``<p>:queue:<q>:workers``. The kernel's reader asks, rarely and in one
round trip for all the jobs it follows, whether the worker of a silent running job is still alive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from typing import Any

import redis

from jupyter_celery.core.protocol import Keys


class Heartbeats:
    """Reads and writes worker heartbeats in one Redis."""

    def __init__(self, client: redis.Redis, keys: Keys, interval: float) -> None:
        self.redis = client
        self.keys = keys
        self.interval = interval
        self.ttl = 4 * interval  # a worker is dead after missing this many seconds of heartbeats

    def beat(self, hostname: str, queues: Iterable[str], pid: int, concurrency: int = 1) -> None:
        """Say that ``hostname`` is alive, consumes ``queues`` and runs ``concurrency`` jobs at once."""
        now = time.time()
        queues = list(queues)
        pipe = self.redis.pipeline(transaction=False)
        ttl_ms = int(self.ttl * 1000)
        beat = {"queues": queues, "pid": pid, "concurrency": concurrency, "ts": now}
        pipe.set(self.keys.worker(hostname), json.dumps(beat), px=ttl_ms)
        for queue in queues:
            key = self.keys.queue_workers(queue)
            pipe.zadd(key, {hostname: now})
            pipe.zremrangebyscore(key, "-inf", now - self.ttl)
            pipe.pexpire(key, ttl_ms * 10)
        pipe.execute()

    def stop(self, hostname: str, queues: Iterable[str]) -> None:
        """Say that ``hostname`` stopped (a clean shutdown)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.keys.worker(hostname))
        for queue in queues:
            pipe.zrem(self.keys.queue_workers(queue), hostname)
        pipe.execute()

    def slots(self, queue: str) -> int:
        """How many jobs of ``queue`` the live workers consuming it run at once (0: no live worker)."""
        live: Any = self.redis.zrangebyscore(self.keys.queue_workers(queue), time.time() - self.ttl, "+inf")
        if not live:
            return 0
        total = 0
        beats: Any = self.redis.mget([self.keys.worker(str(h)) for h in live])
        for raw in beats:
            if raw is None:
                continue
            try:
                total += max(1, int(json.loads(raw).get("concurrency", 1)))
            except (TypeError, ValueError, AttributeError):
                total += 1
        return total

    def queue_pipeline(self, pipe: Any, hostnames: list[str], queues: list[str]) -> None:
        """Add the liveness reads of :meth:`parse` to ``pipe`` (so callers batch them with theirs)."""
        if hostnames:
            pipe.mget([self.keys.worker(h) for h in hostnames])
        cutoff = time.time() - self.ttl
        for queue in queues:
            pipe.zcount(self.keys.queue_workers(queue), cutoff, "+inf")

    @staticmethod
    def parse(replies: list[Any], hostnames: list[str], queues: list[str]) -> tuple[set[str], dict[str, int]]:
        """Live hostnames and worker counts per queue, from the replies of :meth:`queue_pipeline`."""
        alive: set[str] = set()
        if hostnames:
            values = replies.pop(0)
            alive = {h for h, v in zip(hostnames, values, strict=True) if v is not None}
        counts = {q: int(replies.pop(0)) for q in queues}
        return alive, counts
