"""``jupyter-celery status``: is the configured stack usable, and how busy is it."""

from __future__ import annotations

import redis

from jupyter_celery.cli.stack import Echo, StackState, beat_lock_holder, workers_by_queue
from jupyter_celery.core.app import make_app
from jupyter_celery.core.protocol import QUEUES
from jupyter_celery.core.settings import Settings, redact_url
from jupyter_celery.core.store import store_for

# kombu's Redis transport keeps a queue's messages of priority p in "<queue>\x06\x16<p>"
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def queue_depth(client: redis.Redis, queue: str) -> int:
    names = [queue] + [f"{queue}{PRIORITY_SEPARATOR}{p}" for p in PRIORITY_STEPS if p]
    return sum(int(client.llen(name)) for name in names)


def status(settings: Settings, echo: Echo, timeout: float = 1.0) -> int:
    """Print the state of broker, workers, queues and store; return 0 only when all are up."""
    ok = True
    echo(f"settings from: {settings.source}")
    stack = StackState.load(settings.state_dir) if settings.source != "environment" else None
    if stack is not None:
        for record in stack.processes:
            echo(f"  {record.name:<18} pid {record.pid:<8} {'running' if record.alive() else 'NOT RUNNING'}")
            ok = ok and record.alive()
    client = redis.Redis.from_url(settings.broker_url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
        echo(f"broker {redact_url(settings.broker_url)}: reachable")
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        echo(f"broker {redact_url(settings.broker_url)}: UNREACHABLE ({exc})")
        echo(f"store {store_for(settings).describe()}")
        return 1
    app = make_app(settings, name="jupyter_celery.status")
    try:
        workers = workers_by_queue(app, timeout=timeout)
    finally:
        app.close()
    for queue in QUEUES:
        names = workers.get(queue, [])
        depth = queue_depth(client, queue)
        alive = f"{len(names)} worker(s): {', '.join(sorted(names))}" if names else "NO WORKER"
        echo(f"queue {queue:<10} {alive}; {depth} message(s) waiting")
        ok = ok and bool(names)
    holder = beat_lock_holder(settings.broker_url, settings.key_prefix)
    echo(
        "beat: active (holds the schedule lock)" if holder else "beat: none active (scheduled notebooks are not queued)"
    )
    store = store_for(settings)
    echo(f"store {store.describe()}")
    client.close()
    return 0 if ok else 1
