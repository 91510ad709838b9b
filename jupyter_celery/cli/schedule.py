"""``jupyter-celery schedule ...`` and ``jupyter-celery beat``: scheduled notebooks from a shell."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from jupyter_celery.core.events import START_ID, EventLog
from jupyter_celery.core.protocol import DEFAULT_QUEUE, OVERLAP_POLICIES, QUEUES, EventKind
from jupyter_celery.core.settings import Settings

Echo = Callable[[str], None]
SUBCOMMANDS = ("add", "list", "show", "pause", "resume", "run", "runs", "delete")

SCHEDULE_HELP = """\
Scheduled notebooks: a notebook, its parameters and a cron expression (or an interval) become a
schedule that beat runs on a worker with papermill, whether Jupyter is up or not. Every run stores
the executed notebook and an HTML rendering in the object store and is kept in the history.

examples:
  jupyter-celery schedule add reports/daily.ipynb --cron "0 6 * * 1-5" --tz Europe/Paris \\
      -p region=emea -p days=7 -n daily-emea --timeout 1800 --retries 1
  jupyter-celery schedule add reports/daily.ipynb --every 15m -n quarter-hourly
  jupyter-celery schedule run daily-emea --wait
  jupyter-celery schedule runs daily-emea
"""


def add_parsers(sub: Any, state_dir_option: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``schedule`` (with its subcommands) and ``beat`` to the CLI's subparsers."""
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("schedule", help="add, list, pause, run and inspect scheduled notebooks",
                       description=SCHEDULE_HELP, formatter_class=raw)  # fmt: skip
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    a = actions.add_parser(
        "add", help="schedule a notebook (uploads it to the store)",
        description="Validate and save a schedule, upload the notebook to the object store and print "
        "the next run times. A bad cron expression, interval, timezone or an unknown parameter is an "
        "error and nothing is saved. Parameters are injected after the cell tagged `parameters`; "
        "values are typed: -p days=7 is an int, -p ok=true a bool, -p region=emea a string "
        "(quote JSON strings to keep digits text: -p 'code=\"007\"').",
    )  # fmt: skip
    a.add_argument("notebook", help="the .ipynb file to run")
    when = a.add_mutually_exclusive_group(required=True)
    when.add_argument("--cron", help='a 5-field cron expression, e.g. "0 6 * * 1-5"')
    when.add_argument("--every", help="an interval, e.g. 15m, 1h30m, 2s")
    a.add_argument("--tz", "--timezone", dest="timezone", default="UTC", help="timezone of the cron (default UTC)")
    a.add_argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE", help="a parameter (repeat)")
    a.add_argument("-q", "--queue", default=DEFAULT_QUEUE, choices=QUEUES, help=f"queue (default {DEFAULT_QUEUE})")
    a.add_argument("-n", "--name", help="schedule name (default: the notebook's file name)")
    a.add_argument("--timeout", type=float, help="seconds a run may take (default: the queue's limits)")
    a.add_argument("--retries", type=int, default=0, help="times a failed run is tried again (default 0)")
    a.add_argument("--retry-delay", type=float, default=60.0, help="seconds between tries (default 60)")
    a.add_argument("--overlap", choices=OVERLAP_POLICIES, default=OVERLAP_POLICIES[0],
                   help="when the previous run still runs: skip this one (default) or allow both")  # fmt: skip
    a.add_argument("--kernel", default="python3", help="kernel to run the notebook with (default python3)")
    a.add_argument("--paused", action="store_true", help="save it paused")
    a.add_argument("--replace", action="store_true", help="replace a schedule of the same name (keeps its history)")
    state_dir_option(a)

    for action, text in (
        ("list", "list your schedules with their next run"),
        ("show", "show a schedule, its next run times and its last runs"),
        ("pause", "stop queueing runs of a schedule (`run` still works)"),
        ("resume", "queue runs again from the next due time"),
        ("run", "queue a run now, paused or not"),
        ("runs", "a schedule's run history, newest first"),
        ("delete", "remove a schedule and its history (stored outputs stay)"),
    ):
        q = actions.add_parser(action, help=text, description=text[0].upper() + text[1:] + ".")
        if action != "list":
            q.add_argument("name", help="the schedule's name")
        if action == "run":
            q.add_argument("--wait", action="store_true", help="follow the run to its end; exit 1 if it failed")
        if action == "runs":
            q.add_argument("--limit", type=int, default=20, help="how many runs (default 20)")
        state_dir_option(q)

    b = sub.add_parser(
        "beat", help="run the scheduler (beat) that queues scheduled notebook runs",
        description="Run Celery beat with RedBeat: schedules are read from Redis at every tick, so "
        "they can be added, changed and paused without a restart. One beat at a time queues runs "
        "(RedBeat's lock); another one started elsewhere waits and takes over if the first dies. "
        "`jupyter-celery up` runs one; run this on one machine of a team deployment.",
    )  # fmt: skip
    b.add_argument("--max-interval", type=float, default=5.0,
                   help="longest seconds between two looks at the schedules (default 5)")  # fmt: skip
    b.add_argument("--loglevel", default="INFO", help="log level (default INFO)")
    b.add_argument("--logfile", help="log to this file instead of stderr")
    state_dir_option(b)


def run_beat_command(args: argparse.Namespace) -> int:
    from jupyter_celery.scheduling.beat import run_beat

    run_beat(Settings.from_env(), max_interval=args.max_interval, loglevel=args.loglevel, logfile=args.logfile)
    return 0


def run_schedule_command(args: argparse.Namespace, echo: Echo) -> int:
    from jupyter_celery.scheduling.model import parse_parameters
    from jupyter_celery.scheduling.registry import Registry
    from jupyter_celery.scheduling.tables import RUN_COLUMNS, SCHEDULE_COLUMNS, describe, run_row, schedule_row
    from jupyter_celery.scheduling.tables import text_table as table

    registry = Registry(Settings.from_env())
    try:
        if args.action == "add":
            spec = registry.create(
                args.notebook, name=args.name, replace=args.replace, cron=args.cron, every=args.every,
                timezone=args.timezone, parameters=parse_parameters(args.param), queue=args.queue,
                timeout=args.timeout, retries=args.retries, retry_delay=args.retry_delay, overlap=args.overlap,
                kernel=args.kernel, paused=args.paused,
            )  # fmt: skip
            echo(f"scheduled {spec.name!r}:")
            for label, value in describe(spec, registry.next_runs(spec)):
                echo(f"  {label:<11} {value}")
        elif args.action == "list":
            specs = registry.all()
            echo(table(SCHEDULE_COLUMNS, [schedule_row(s, registry.next_runs(s, 1)) for s in specs]))
        elif args.action == "show":
            spec = registry.get(args.name)
            for label, value in describe(spec, registry.next_runs(spec, 5)):
                echo(f"{label:<11} {value}")
            echo("")
            echo(table(RUN_COLUMNS, [run_row(r) for r in registry.history(args.name, limit=5)]))
        elif args.action in ("pause", "resume"):
            spec = getattr(registry, args.action)(args.name)
            echo(f"{spec.name!r} is {'paused' if spec.paused else 'active'}; next run: "
                 f"{', '.join(str(t) for t in registry.next_runs(spec, 1)) or 'none'}")  # fmt: skip
        elif args.action == "run":
            ticket = registry.run_now(args.name)
            echo(f"queued run {ticket.run_id} of {args.name!r}")
            if args.wait:
                return follow(registry.events, ticket.run_id, echo)
        elif args.action == "runs":
            echo(table(RUN_COLUMNS, [run_row(r) for r in registry.history(args.name, limit=args.limit)]))
        elif args.action == "delete":
            registry.delete(args.name)
            echo(f"deleted {args.name!r}")
    finally:
        registry.close()
    return 0


def follow(events: EventLog, job_id: str, echo: Echo, block_seconds: float = 2.0) -> int:
    """Print a job's progress and output until it ends; 0 if it succeeded."""
    last = START_ID
    while True:
        for _job, event in events.read({job_id: last}, block_seconds):
            last = event.id
            fields = event.fields
            if event.kind is EventKind.PROGRESS:
                echo(f"[{fields.get('done')}/{fields.get('total')}] {fields.get('message', '')}")
            elif event.kind in (EventKind.STDOUT, EventKind.STDERR):
                stream = sys.stdout if event.kind is EventKind.STDOUT else sys.stderr
                stream.write(str(fields.get("text", "")))
                stream.flush()
            elif event.kind is EventKind.RETRYING:
                echo(f"retrying (attempt {fields.get('attempt')}): {fields.get('reason', '')}")
            elif event.kind.terminal:
                detail = fields.get("message") or fields.get("reason") or ""
                echo(f"{event.kind.value}{': ' + str(detail) if detail else ''}")
                return 0 if event.kind is EventKind.SUCCEEDED else 1
