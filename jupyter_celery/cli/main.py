"""The ``jupyter-celery`` command."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from jupyter_celery._version import __version__
from jupyter_celery.core.errors import JupyterCeleryError
from jupyter_celery.core.protocol import QUEUES
from jupyter_celery.core.settings import ENV_PREFIX, Settings, default_state_dir

DESCRIPTION = """\
Run heavy notebook work on Celery workers.

On one machine, `jupyter-celery up` starts everything (Redis, a worker per queue, beat, a
local object store); notebooks then use `%load_ext jupyter_celery` and `%%celery`, and
`jupyter-celery schedule` runs notebooks on a cron or an interval. A team points
JUPYTER_CELERY_BROKER_URL (and the other variables in the README) at shared services and runs
`jupyter-celery worker -q QUEUE` on as many machines as it likes, and `jupyter-celery beat` on one.
"""


def _state_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, default=None,
        help=f"where the embedded stack keeps its data, logs and connection file "
        f"(default: ${ENV_PREFIX}STATE_DIR or ~/.local/state/jupyter-celery)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jupyter-celery", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"jupyter-celery {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "up", help="start the embedded stack: redis-server, a worker per queue, beat, a local store",
        description="Start a real redis-server (persistent, on a free loopback port), one prefork "
        "worker for each queue (" + ", ".join(QUEUES) + "), beat (which queues scheduled notebook "
        "runs) and a local-directory object store (or the store of JUPYTER_CELERY_STORE_URL when "
        "it is set, e.g. MinIO), and "
        "write the connection file that notebooks and workers on this machine read. In the "
        "foreground Ctrl-C stops everything; with --detach it returns once every worker answers a "
        "ping. If a stack is already up, nothing is started; a connection file whose processes are "
        "dead is replaced.",
    )  # fmt: skip
    p.add_argument("--detach", action="store_true", help="return once the stack is ready, leaving it running")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the workers (default 90)")
    _state_dir_option(p)

    p = sub.add_parser(
        "down", help="stop the processes `up` started",
        description="Stop exactly the processes recorded by `jupyter-celery up` (by pid and start "
        "time), beat and workers first, Redis last, and remove the connection file. Data in the state "
        "directory is kept.",
    )  # fmt: skip
    p.add_argument("--grace", type=float, default=10.0, help="seconds to wait before killing (default 10)")
    _state_dir_option(p)

    p = sub.add_parser(
        "status", help="is the broker reachable, which workers serve which queue, how deep are the queues",
        description="Check the configured stack: broker reachable, live workers per queue (ping), "
        "messages waiting per queue, whether a beat is active, store location. Exits non-zero when "
        "something is down (no active beat is reported, not counted: not every deployment schedules).",
    )  # fmt: skip
    p.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for worker replies (default 1)")
    _state_dir_option(p)

    p = sub.add_parser(
        "worker", help="run a worker for one queue against the configured broker",
        description="Run a Celery worker consuming one queue, with that queue's defaults (pool, "
        "concurrency, time limits); any further Celery worker options, after `--`, override them. "
        "This is what a team runs on other machines. If the Celery worker dies (a crash, a lost "
        "broker connection it cannot recover from), it is restarted with backoff, unless "
        "--no-restart is given (e.g. under a process manager that restarts it itself).\n\n"
        "example: jupyter-celery worker -q circuit_q -- --concurrency=4 --loglevel=DEBUG",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("-q", "--queue", required=True, choices=QUEUES, help="the queue to consume")
    p.add_argument("--no-restart", action="store_true", help="run the Celery worker in this process, unsupervised")
    p.add_argument("celery_options", nargs=argparse.REMAINDER, help="more `celery worker` options, after --")
    _state_dir_option(p)

    p = sub.add_parser(
        "gc", help="delete job objects (inputs, outputs) that no job refers to any more",
        description="Delete the job objects in the object store that no job on record refers to "
        "and that were written longer ago than --older-than; report counts and sizes. A job "
        "refers to its inputs and outputs until its record expires (JUPYTER_CELERY_JOB_TTL after "
        "its last event), so queued, running and recent jobs keep theirs. Named datasets are never "
        "deleted. Partial writes left by interrupted writers are removed too.\n\n"
        "example: jupyter-celery gc --older-than 7d --dry-run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument(
        "--older-than", type=_duration, default="7d", metavar="AGE",
        help="only objects written longer ago than this: 90s, 30m, 12h, 7d, 2w (default 7d)",
    )  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="report what would be deleted, delete nothing")
    p.add_argument("--owner", help="only this owner's objects (default: every owner's)")
    _state_dir_option(p)

    from jupyter_celery.cli.schedule import add_parsers

    add_parsers(sub, _state_dir_option)
    return parser


def _duration(text: str) -> float:
    from jupyter_celery.core.collector import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def run_gc(settings: Settings, older_than: float, dry_run: bool, owner: str | None) -> int:
    from jupyter_celery.core.collector import collect
    from jupyter_celery.core.events import REDIS_ERRORS, EventLog, unreachable
    from jupyter_celery.core.store import store_for

    events = EventLog.connect(settings)
    try:
        result = collect(store_for(settings), events.referenced_objects, older_than, dry_run=dry_run, owner=owner)
    except REDIS_ERRORS as exc:
        raise unreachable(settings.events_url, exc) from exc
    finally:
        events.redis.close()
    for line in result.lines():
        echo(line)
    return 0


def run_worker(queue: str, options: Sequence[str], *, restart: bool) -> int:
    extra = [o for o in options if o != "--"]
    if restart:
        from jupyter_celery.cli.supervisor import supervise, worker_command

        return supervise(worker_command(queue, extra), echo=lambda line: print(line, file=sys.stderr, flush=True))
    from jupyter_celery.core.queues import profile
    from jupyter_celery.worker.app import app

    argv = ["worker", *profile(queue).worker_options(), "--loglevel=INFO", *extra]
    app.worker_main(argv)
    return 0


def echo(line: str) -> None:
    print(line, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.state_dir is not None:
        os.environ[ENV_PREFIX + "STATE_DIR"] = str(args.state_dir.resolve())
    state_dir = default_state_dir(os.environ)
    try:
        return _run(args, state_dir)
    except JupyterCeleryError as exc:
        print(f"jupyter-celery: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, state_dir: Path) -> int:  # noqa: PLR0911 - one return per command
    if args.command == "up":
        from jupyter_celery.cli.stack import up

        return up(state_dir, detach=args.detach, echo=echo, timeout=args.timeout)
    if args.command == "down":
        from jupyter_celery.cli.stack import down

        return down(state_dir, echo=echo, grace=args.grace)
    if args.command == "status":
        from jupyter_celery.cli.status import status

        return status(Settings.from_env(), echo=echo, timeout=args.timeout)
    if args.command == "worker":
        return run_worker(args.queue, args.celery_options, restart=not args.no_restart)
    if args.command == "gc":
        return run_gc(Settings.from_env(), args.older_than, args.dry_run, args.owner)
    from jupyter_celery.cli.schedule import run_beat_command, run_schedule_command

    if args.command == "beat":
        return run_beat_command(args)
    return run_schedule_command(args, echo)


if __name__ == "__main__":
    sys.exit(main())
