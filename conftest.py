"""Test harness: a real redis-server and real worker processes per queue, for the whole session.

The stack is started once, on first need (a test asking for ``stack``, or an nbval notebook
cell, whose kernel must inherit the stack's environment before it starts), and stopped at the
end of the session. Keys are cleaned between tests. Its store is a local directory.

S3 is a real S3 HTTP endpoint: moto's server (``ThreadedMotoServer``) on a free loopback port, or
a real MinIO/S3 when ``JUPYTER_CELERY_TEST_S3_ENDPOINT_URL`` (with ``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``) is set. Clients reach it through a recording fault proxy
(``tests/s3proxy.py``). A second, smaller stack (its own redis-server, one python_q worker) uses
an S3 store, for the end-to-end tests on that backend.
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
from jupyter_celery.core.protocol import PYTHON_Q, QUEUES, Keys
from jupyter_celery.core.settings import ENV_PREFIX, Settings

S3_TEST_ENDPOINT = "JUPYTER_CELERY_TEST_S3_ENDPOINT_URL"
S3_TEST_BUCKET = "jupyter-celery-test"


class TestStack:
    """Redis on a free port, one worker per queue, a store: all in one temporary directory.

    ``export`` puts the stack's settings into this process's environment (the session's main
    stack: kernels started by tests inherit them); otherwise use :meth:`settings`.
    """

    def __init__(
        self,
        base: Path,
        *,
        store_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        queues: tuple[str, ...] = QUEUES,
        export: bool = True,
    ) -> None:
        self.base = base
        self.export = export
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.redis_proc = self._start_redis()
        self.env = {
            ENV_PREFIX + "BROKER_URL": self.url,
            ENV_PREFIX + "STORE_URL": store_url or (base / "store").as_uri(),
            ENV_PREFIX + "STATE_DIR": str(base / "state"),
            ENV_PREFIX + "OWNER": "tester",
            # fast liveness for the tests: a dead worker is noticed in seconds
            ENV_PREFIX + "HEARTBEAT_INTERVAL": "0.5",
            ENV_PREFIX + "LIVENESS_INTERVAL": "1",
            ENV_PREFIX + "CANCEL_GRACE": "2",
            **(extra_env or {}),
        }
        if export:
            os.environ.update(self.env)
        self.logs = base / "logs"
        self.workers: dict[str, subprocess.Popen[bytes]] = {}
        for queue in queues:
            self.start_worker(queue)
        wait_for_workers(self.url, queues, 90, list(self.workers.values()))
        self.redis = redis.Redis.from_url(self.url, decode_responses=True)

    def settings(self, **overrides: str) -> Settings:
        """The settings a notebook of this stack uses (``overrides``: more variables, without the prefix)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
        return Settings.from_env({**env, **self.env, **{ENV_PREFIX + k: v for k, v in overrides.items()}})

    def _start_redis(self) -> subprocess.Popen[bytes]:
        proc = start_redis(self.base / "redis", self.port, persistent=True)
        wait_for_redis(self.url, proc)
        return proc

    def start_worker(self, queue: str) -> subprocess.Popen[bytes]:
        proc = start_worker(queue, {**os.environ, **self.env}, self.logs, hostname=f"{queue}@test")
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
        if self.export:
            for name in self.env:
                os.environ.pop(name, None)


class S3Service:
    """The session's S3 endpoint (moto's server, or the MinIO of the environment) and a fault proxy before it."""

    def __init__(self) -> None:
        from tests.s3proxy import FaultProxy

        self.server: Any = None
        self.endpoint = os.environ.get(S3_TEST_ENDPOINT, "")
        self.moto = not self.endpoint
        if self.moto:
            import logging

            from moto.server import ThreadedMotoServer

            logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
            port = free_port()
            self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            self.server.start()
            self.endpoint = f"http://127.0.0.1:{port}"
        os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        self.proxy = FaultProxy(self.endpoint)

    def env(self) -> dict[str, str]:
        """What a process needs to reach this S3 through the proxy (credentials included)."""
        names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
        return {ENV_PREFIX + "S3_ENDPOINT_URL": self.proxy.url, **{n: os.environ[n] for n in names if n in os.environ}}

    def stop(self) -> None:
        self.proxy.close()
        if self.server is not None:
            self.server.stop()


_stack: TestStack | None = None
_s3: S3Service | None = None
_s3_stack: TestStack | None = None
_base: Path | None = None


def get_s3() -> S3Service:
    global _s3  # noqa: PLW0603
    if _s3 is None:
        _s3 = S3Service()
    return _s3


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
    for stack in (_s3_stack, _stack):
        if stack is not None:
            stack.stop()
    if _s3 is not None:
        _s3.stop()
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
def s3() -> S3Service:
    """The session's S3 endpoint and its fault proxy (faults and records are cleared by ``s3_store_url``)."""
    return get_s3()


@pytest.fixture
def s3_store_url(s3: S3Service, request: pytest.FixtureRequest) -> Iterator[str]:
    """A store URL of its own for this test, in the test bucket."""
    import uuid

    s3.proxy.clear()
    yield f"s3://{S3_TEST_BUCKET}/{request.node.name[:40].strip('[]').replace('[', '-')}-{uuid.uuid4().hex[:8]}"
    s3.proxy.clear()


@pytest.fixture(scope="session")
def s3_stack(running_stack: TestStack, s3: S3Service) -> TestStack:
    """A second stack whose python_q worker stores through S3 (via the fault proxy)."""
    global _s3_stack  # noqa: PLW0603
    if _s3_stack is None:
        base = Path(tempfile.mkdtemp(prefix="s3-", dir=_base))
        _s3_stack = TestStack(
            base,
            store_url=f"s3://{S3_TEST_BUCKET}/stack",
            extra_env={**s3.env(), ENV_PREFIX + "S3_PART_MB": "5"},
            queues=(PYTHON_Q,),
            export=False,
        )
    return _s3_stack


@pytest.fixture(scope="session")
def ip(running_stack: TestStack) -> Any:
    """An in-process IPython shell with the extension loaded (for unit-level magic checks)."""
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "jupyter_celery")
    return shell
