"""The ``%celery_schedule`` and ``%celery_schedules`` line magics."""

from __future__ import annotations

import shlex

from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from jupyter_celery.core.protocol import DEFAULT_QUEUE, OVERLAP_POLICIES, QUEUES
from jupyter_celery.kernel.schedules import Schedule, ScheduleList, schedule_notebook, schedules
from jupyter_celery.scheduling.model import DEFAULT_RETRY_DELAY, parse_parameters


@magics_class
class ScheduleMagics(Magics):
    """Magics that schedule notebooks to run on workers."""

    @magic_arguments()
    @argument("notebook", help="the .ipynb file to run (uploaded to the object store now)")
    @argument("--cron", help='a 5-field cron expression, e.g. "0 6 * * 1-5" (quote it)')
    @argument("--every", help="an interval instead of a cron, e.g. 15m, 1h30m, 2s")
    @argument("--tz", default="UTC", help="timezone of the cron expression (default UTC)")
    @argument("-p", "--param", action="append", default=[], metavar="NAME=VALUE",
              help="a parameter, typed (days=7 is an int, region=emea a string); repeat it")  # fmt: skip
    @argument("-q", "--queue", default=DEFAULT_QUEUE, choices=QUEUES, help=f"queue (default: {DEFAULT_QUEUE})")
    @argument("-n", "--name", help="the schedule's name (default: the notebook's file name)")
    @argument("--timeout", type=float, help="seconds a run may take")
    @argument("--retries", type=int, default=0, help="times a failed run is tried again")
    @argument("--retry-delay", type=float, default=DEFAULT_RETRY_DELAY, help="seconds between tries")
    @argument("--overlap", choices=OVERLAP_POLICIES, default=OVERLAP_POLICIES[0],
              help="skip a run while the previous one runs (default), or allow both")  # fmt: skip
    @argument("--paused", action="store_true", help="save it paused")
    @argument("--replace", action="store_true", help="redefine a schedule of the same name")
    @line_magic
    def celery_schedule(self, line: str) -> Schedule:
        """Schedule a notebook to run on a worker, on a cron expression or an interval.

        The notebook is uploaded now; beat runs it with papermill whether this kernel runs or
        not. Parameters are injected after the notebook's cell tagged ``parameters``. A bad cron
        expression or an unknown parameter is an error and nothing is saved. Shows the schedule
        and its next run times.

        Examples::

            %celery_schedule reports/daily.ipynb --cron "0 6 * * 1-5" --tz Europe/Paris -p region=emea -p days=7
            %celery_schedule reports/daily.ipynb --every 15m -n quarter-hourly --timeout 600 --retries 1
            s = %celery_schedule reports/daily.ipynb --every 1h --replace
            s.run_now()
        """
        # shell quoting (a cron expression has spaces): IPython's own splitting keeps the quotes
        args = self.celery_schedule.parser.parse_args(shlex.split(line))
        return schedule_notebook(
            args.notebook, cron=args.cron, every=args.every, timezone=args.tz, parameters=parse_parameters(args.param),
            queue=args.queue, name=args.name, timeout=args.timeout, retries=args.retries,
            retry_delay=args.retry_delay, overlap=args.overlap, paused=args.paused, replace=args.replace,
        )  # fmt: skip

    @line_magic
    def celery_schedules(self, line: str = "") -> ScheduleList:
        """List your scheduled notebooks with their timing, parameters, state and next run.

        Examples::

            %celery_schedules
            for s in %celery_schedules:
                print(s.name, s.runs()[:1])
        """
        return schedules()
