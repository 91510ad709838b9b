"""The embedded single-machine stack: a real redis-server, one worker per queue, beat, a local store.

``up`` writes a connection file in the state directory (``stack.json``) that every entry point
reads when ``JUPYTER_CELERY_BROKER_URL`` is not set; ``down`` stops exactly the processes it
recorded there.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_celery.cli.processes import ProcessRecord, stop
from jupyter_celery.cli.redis_server import free_port, start_redis, wait_for_redis
from jupyter_celery.core.app import make_app
from jupyter_celery.core.errors import ConnectionFailed
from jupyter_celery.core.protocol import QUEUES, Keys
from jupyter_celery.core.settings import CONNECTION_FILE, ENV_PREFIX, Settings, read_connection_file, redact_url

Echo = Callable[[str], None]


@dataclass
class StackState:
    """What the connection file says about a running embedded stack."""

    state_dir: Path
    broker_url: str
    store_url: str
    processes: list[ProcessRecord] = field(default_factory=list)
    started: float = 0.0

    @property
    def path(self) -> Path:
        return self.state_dir / CONNECTION_FILE

    @property
    def port(self) -> int | None:
        tail = self.broker_url.rsplit(":", 1)[-1].split("/")[0]
        return int(tail) if tail.isdigit() else None

    @classmethod
    def load(cls, state_dir: Path) -> StackState | None:
        data = read_connection_file(state_dir)
        if data is None or "processes" not in data:
            return None
        return cls(
            state_dir=state_dir,
            broker_url=data["broker_url"],
            store_url=data["store_url"],
            processes=[ProcessRecord.from_dict(p) for p in data["processes"]],
            started=float(data.get("started", 0.0)),
        )

    def save(self) -> None:
        data: dict[str, Any] = {
            "broker_url": self.broker_url,
            "store_url": self.store_url,
            "started": self.started,
            "processes": [p.to_dict() for p in self.processes],
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def dead(self) -> list[ProcessRecord]:
        return [p for p in self.processes if not p.alive()]


def worker_env(state: StackState) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("BROKER_URL", "RESULT_URL", "EVENTS_URL"):
        env.pop(ENV_PREFIX + name, None)
    env[ENV_PREFIX + "BROKER_URL"] = state.broker_url
    env[ENV_PREFIX + "STORE_URL"] = state.store_url
    env[ENV_PREFIX + "STATE_DIR"] = str(state.state_dir)
    return env


def start_worker(
    queue: str, env: dict[str, str], log_dir: Path, hostname: str | None = None
) -> subprocess.Popen[bytes]:
    """Start ``jupyter-celery worker -q QUEUE`` in its own session, logging to ``log_dir``.

    Its revoked job ids are kept in ``<log_dir>/<queue>.state`` (Celery's ``--statedb``), so a
    job cancelled while queued stays cancelled across a worker restart.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    node = hostname or f"{queue}@{socket.gethostname()}"
    args = [
        sys.executable, "-m", "jupyter_celery", "worker", "-q", queue, "--",
        f"--hostname={node}", f"--logfile={log_dir / (queue + '.log')}", "--loglevel=INFO",
        f"--statedb={log_dir / (queue + '.state')}",
    ]  # fmt: skip
    return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def start_beat(env: dict[str, str], log_dir: Path, max_interval: float = 5.0) -> subprocess.Popen[bytes]:
    """Start ``jupyter-celery beat`` in its own session, logging to ``log_dir/beat.log``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "jupyter_celery", "beat", f"--max-interval={max_interval:g}",
            f"--logfile={log_dir / 'beat.log'}"]  # fmt: skip
    return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def beat_lock_holder(broker_url: str, key_prefix: str = "jc") -> str | None:
    """The token of the beat holding RedBeat's lock (None when no beat is active)."""
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=2, socket_timeout=2, decode_responses=True)
    try:
        holder: Any = client.get(Keys(key_prefix).beat_lock())
        return str(holder) if holder else None
    finally:
        client.close()


def wait_for_beat(broker_url: str, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    """Return once a beat holds the schedule lock; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while beat_lock_holder(broker_url) is None:
        if proc.poll() is not None:
            raise ConnectionFailed(f"beat exited with code {proc.returncode} while starting")
        if time.monotonic() > deadline:
            raise ConnectionFailed(f"beat did not take the schedule lock within {timeout:g}s")
        time.sleep(0.1)  # polling another process's readiness


def wait_for_workers(
    broker_url: str, queues: tuple[str, ...], timeout: float, procs: list[subprocess.Popen[bytes]]
) -> None:
    """Return once a worker answers a ping for every queue; raise if one exits or time runs out."""
    settings = Settings(broker_url=broker_url, result_url=broker_url, events_url=broker_url, store_url="")
    app = make_app(settings, name="jupyter_celery.cli")
    deadline = time.monotonic() + timeout
    try:
        while True:
            for proc in procs:
                if proc.poll() is not None:
                    raise ConnectionFailed(f"a worker exited with code {proc.returncode} while starting")
            if set(queues) <= set(workers_by_queue(app, timeout=1.0)):
                return
            if time.monotonic() > deadline:
                raise ConnectionFailed(f"workers did not answer a ping within {timeout:g}s")
    finally:
        app.close()


def workers_by_queue(app: Any, timeout: float = 1.0) -> dict[str, list[str]]:
    """Live workers (answering within ``timeout``) grouped by the queues they consume."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    out: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for queue in queues:
            out.setdefault(queue["name"], []).append(worker)
    return out


def _start_all(state: StackState, timeout: float) -> None:
    """Start Redis, a worker per queue and beat, recording each process as soon as it exists."""
    logs = state.state_dir / "logs"

    def record(name: str, proc: subprocess.Popen[bytes], log: Path) -> subprocess.Popen[bytes]:
        state.processes.append(ProcessRecord.of(name, proc, str(log)))
        state.save()
        return proc

    redis_dir = state.state_dir / "redis"
    redis_proc = record("redis", start_redis(redis_dir, state.port or 0), redis_dir / "redis.log")
    wait_for_redis(state.broker_url, redis_proc)
    env = worker_env(state)
    workers = [record(f"worker {q}", start_worker(q, env, logs), logs / f"{q}.log") for q in QUEUES]
    wait_for_workers(state.broker_url, QUEUES, timeout, workers)
    beat = record("beat", start_beat(env, logs), logs / "beat.log")
    wait_for_beat(state.broker_url, timeout, beat)


def up(state_dir: Path, *, detach: bool, echo: Echo, timeout: float = 90.0) -> int:
    """Start the embedded stack (see the CLI help). Returns the exit code."""
    state_dir.mkdir(parents=True, exist_ok=True)
    previous = StackState.load(state_dir)
    if previous is not None:
        dead = previous.dead()
        if not dead:
            echo(f"A stack is already up (state in {state_dir}); nothing started.")
            echo(f"  broker: {previous.broker_url}")
            return 0
        echo(f"Replacing a stale connection file ({', '.join(p.name for p in dead)} not running).")
        stop([p for p in previous.processes if p not in dead], grace=10)
        previous.remove()

    port = free_port(previous.port if previous else None)
    # The workers must use the store the notebooks use: JUPYTER_CELERY_STORE_URL when set (MinIO/S3...).
    store_url = os.environ.get(ENV_PREFIX + "STORE_URL") or (state_dir / "store").as_uri()
    state = StackState(
        state_dir=state_dir,
        broker_url=f"redis://127.0.0.1:{port}/0",
        store_url=store_url,
        started=time.time(),
    )
    if store_url == (state_dir / "store").as_uri():
        (state_dir / "store").mkdir(exist_ok=True)
    try:
        _start_all(state, timeout)
    except BaseException as exc:
        stop(state.processes, grace=5)
        state.remove()
        if isinstance(exc, KeyboardInterrupt):
            echo("Interrupted; stopped what was started.")
            return 130
        echo(f"jupyter-celery up failed: {exc}")
        for record in state.processes:
            if record.log and Path(record.log).exists():
                echo(f"--- last lines of {record.log}")
                echo("\n".join(Path(record.log).read_text(errors="replace").splitlines()[-15:]))
        return 1

    echo(f"jupyter-celery stack is up (state in {state_dir}):")
    for record in state.processes:
        echo(f"  {record.name:<18} pid {record.pid:<8} log {record.log}")
    echo(f"  broker, results, events: {state.broker_url}")
    echo(f"  store:                   {redact_url(state.store_url)}")
    echo("Notebooks and workers on this machine find it through the connection file; elsewhere set")
    echo(f"  {ENV_PREFIX}BROKER_URL={state.broker_url}")
    if detach:
        echo("Stop it with `jupyter-celery down`.")
        return 0
    return _run_foreground(state, echo)


def _run_foreground(state: StackState, echo: Echo) -> int:
    wanted = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    echo("Press Ctrl-C to stop it.")
    interrupted = False
    try:
        while not interrupted:
            dead = state.dead()
            if dead:
                echo(f"{', '.join(p.name for p in dead)} exited; stopping the stack.")
                break
            interrupted = signal.sigtimedwait(wanted, 1.0) is not None
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, wanted)
    for line in stop(list(reversed(state.processes)), grace=10):
        echo(line)
    state.remove()
    return 0 if interrupted else 1


def down(state_dir: Path, *, echo: Echo, grace: float = 10.0) -> int:
    """Stop the processes recorded by ``up`` (beat and workers first, Redis last)."""
    state = StackState.load(state_dir)
    if state is None:
        echo(f"No stack is up (no connection file in {state_dir}); nothing stopped.")
        return 0
    for line in stop(list(reversed(state.processes)), grace=grace):
        echo(line)
    state.remove()
    return 0
