"""The two dedicated queues and the default settings of their worker pools.

``python_q`` takes general Python work: many short jobs, several per machine at once.
``circuit_q`` takes heavy DataFrame analytics: memory-hungry, one job per process, long limits,
and a child process replaced once it has grown large.

A worker started with ``jupyter-celery worker -q QUEUE`` gets these defaults; any Celery worker
option given after them on the command line wins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from jupyter_celery.core.errors import ConfigurationError
from jupyter_celery.core.protocol import CIRCUIT_Q, PYTHON_Q, QUEUES


@dataclass(frozen=True)
class QueueProfile:
    """How a worker pool for one queue runs."""

    name: str
    description: str
    concurrency: int
    soft_time_limit: int  # seconds: SoftTimeLimitExceeded is raised in the job
    time_limit: int  # seconds: the child process is killed and replaced
    max_memory_per_child_kb: int | None = None

    def worker_options(self) -> list[str]:
        """Celery worker command-line options for this pool."""
        options = [
            f"--queues={self.name}",
            "--pool=prefork",
            f"--concurrency={self.concurrency}",
            f"--soft-time-limit={self.soft_time_limit}",
            f"--time-limit={self.time_limit}",
            "--prefetch-multiplier=1",
        ]
        if self.max_memory_per_child_kb:
            options.append(f"--max-memory-per-child={self.max_memory_per_child_kb}")
        return options


PROFILES: dict[str, QueueProfile] = {
    PYTHON_Q: QueueProfile(
        name=PYTHON_Q,
        description="general Python: many short jobs",
        concurrency=max(2, min(8, os.cpu_count() or 2)),
        soft_time_limit=3600,
        time_limit=3660,
    ),
    CIRCUIT_Q: QueueProfile(
        name=CIRCUIT_Q,
        description="heavy DataFrame analytics: memory-hungry, one job per process, long limits",
        concurrency=1,
        soft_time_limit=6 * 3600,
        time_limit=6 * 3600 + 300,
        max_memory_per_child_kb=4 * 1024 * 1024,
    ),
}

# Above the longest hard limit, so Redis never re-delivers a message whose job is still running.
VISIBILITY_TIMEOUT = max(p.time_limit for p in PROFILES.values()) + 3600


def hard_limit(timeout: float) -> float:
    """The hard limit for a job's own ``--timeout`` (its soft limit): 10% later, 1 to 60 s later."""
    return timeout + min(60.0, max(1.0, timeout * 0.1))


# Seconds a scheduled run may go past its own timeout (which it enforces itself: kernel shutdown,
# storing outputs) before Celery's soft limit stops it; the hard limit follows (see hard_limit).
RUN_GRACE = 30.0


def profile(queue: str) -> QueueProfile:
    """The profile of ``queue``, or a clear error naming the known queues."""
    try:
        return PROFILES[queue]
    except KeyError:
        raise ConfigurationError(f"unknown queue {queue!r}; the queues are {', '.join(QUEUES)}") from None
