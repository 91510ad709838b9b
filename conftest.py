"""Test harness: a real redis-server and real worker processes per queue, for the whole session.

The stack is started once, on first need (a test asking for ``stack``, or an nbval notebook
cell, whose kernel must inherit the stack's environment before it starts), and stopped at the
end of the session. Keys are cleaned between tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from jupyter_celery.cli.processes import ProcessRecord, stop
from jupyter_celery.cli.redis_server import free_port, start_redis, wait_for_redis
from jupyter_celery.cli.stack import start_worker, wait_for_workers
from jupyter_celery.core.protocol import QUEUES, Keys
from jupyter_celery.core.settings import ENV_PREFIX


class TestStack:
    """Redis on a free port, one worker per queue, a local store: all in one temporary directory."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis_proc = self._start_redis()
        self.env = {
            ENV_PREFIX + "BROKER_URL": self.url,
            ENV_PREFIX + "STORE_URL": (base / "store").as_uri(),
            ENV_PREFIX + "STATE_DIR": str(base / "state"),
            ENV_PREFIX + "OWNER": "tester",
            # fast liveness for the tests: a dead worker is noticed in seconds
            ENV_PREFIX + "HEARTBEAT_INTERVAL": "0.5",
            ENV_PREFIX + "LIVENESS_INTERVAL": "1",
            ENV_PREFIX + "CANCEL_GRACE": "2",
        }
        os.environ.update(self.env)
        self.logs = base / "logs"
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        for queue in QUEUES:
            self.start_worker(queue)
        wait_for_workers(self.url, QUEUES, 90, list(self.workers.values()))
        self.redis = redis.Redis.from_url(self.url, decode_responses=True)

    def _start_redis(self) -> subprocess.Popen[bytes]:
        proc = start_redis(self.base / "redis", self.port, persistent=True)
        wait_for_redis(self.url, proc)
        return proc

    def start_worker(self, queue: str) -> subprocess.Popen[bytes]:
        proc = start_worker(queue, dict(os.environ), self.logs, hostname=f"{queue}@test")
        self.workers[queue] = proc
        return proc

    def restart_redis(self) -> None:
        """Stop Redis cleanly (its data is saved) and start it again on the same port."""
        with contextlib.suppress(redis.ConnectionError):
            self.redis.shutdown()
        self.redis_proc.wait(timeout=30)
        if self.redis_proc.stderr is not None:
            self.redis_proc.stderr.close()
        self.redis_proc = self._start_redis()

    def kill_worker(self, queue: str) -> None:
        """SIGKILL a worker's main process and its children (no clean shutdown)."""
        proc = self.workers[queue]
        parent = psutil.Process(proc.pid)
        for child in parent.children(recursive=True):
            child.kill()
        parent.kill()
        proc.wait(timeout=30)

    def restart_worker(self, queue: str) -> None:
        proc = self.start_worker(queue)
        wait_for_workers(self.url, (queue,), 90, [proc])

    def log(self, queue: str) -> str:
        return (self.logs / f"{queue}.log").read_text(errors="replace")

    def clean(self) -> None:
        keep = {Keys().beat_lock()}  # a beat running across tests keeps its lock
        for pattern in ("jc:*", "celery-task-meta-*"):
            keys = [k for k in self.redis.scan_iter(pattern, count=1000) if k not in keep]
            if keys:
                self.redis.delete(*keys)

    def stop(self) -> None:
        records = [ProcessRecord.of(f"worker {q}", p) for q, p in self.workers.items() if p.poll() is None]
        if self.redis_proc.poll() is None:
            records.append(ProcessRecord.of("redis", self.redis_proc))
        stop(records, grace=10)
        for proc in [*self.workers.values(), self.redis_proc]:
            proc.wait()
        if self.redis_proc.stderr is not None:
            self.redis_proc.stderr.close()
        for name in self.env:
            os.environ.pop(name, None)


_stack: TestStack | None = None
_base: Path | None = None


def get_stack() -> TestStack:
    global _stack, _base  # noqa: PLW0603
    if _stack is None:
        _base = Path(tempfile.mkdtemp(prefix="jc-test-"))
        _stack = TestStack(_base)
    return _stack


def pytest_runtest_setup(item: pytest.Item) -> None:
    # nbval starts a notebook's kernel before fixtures run: the stack must exist by then.
    if item.path.suffix == ".ipynb":
        get_stack()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _stack is not None:
        _stack.stop()
    if _base is not None and not os.environ.get("JC_KEEP_TEST_DIR"):
        shutil.rmtree(_base, ignore_errors=True)


@pytest.fixture(scope="session")
def running_stack() -> TestStack:
    """The session's stack, started on first use."""
    return get_stack()


@pytest.fixture
def stack(running_stack: TestStack) -> Iterator[TestStack]:
    """The session's running stack; keys written by the test are removed afterwards."""
    yield running_stack
    running_stack.clean()


@pytest.fixture(scope="session")
def ip(running_stack: TestStack) -> Any:
    """An in-process IPython shell with the extension loaded (for unit-level magic checks)."""
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "jupyter_celery")
    return shell
