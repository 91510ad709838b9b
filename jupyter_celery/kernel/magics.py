"""The ``%%celery`` cell magic and the ``%celery_*`` line magics."""

from __future__ import annotations

import copy
import functools
import sys
import warnings
from typing import Any

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from jupyter_celery.core import runtime
from jupyter_celery.core.cellcode import CellAnalysis, check_cell
from jupyter_celery.core.errors import EncodingError, JupyterCeleryError
from jupyter_celery.core.messages import JobSpec, environment_fingerprint
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import DEFAULT_QUEUE, QUEUES, new_job_id
from jupyter_celery.kernel import api
from jupyter_celery.kernel.client import Client, get_client
from jupyter_celery.kernel.console import follow_in_cell
from jupyter_celery.kernel.job import Job
from jupyter_celery.kernel.views import view_of, widgets_available

DEFAULT_HANDLE = "_celery_job"


@functools.lru_cache(maxsize=64)
def _parsed(magic: Any, line: str) -> Any:
    return parse_argstring(magic, line)


def _parse_options(magic: Any, line: str) -> Any:
    """The magic's options (argparse is slow for a hot path; a line is parsed once). A copy: callers may edit it."""
    return copy.copy(_parsed(magic, line))


def _names(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    names = [n.strip() for n in raw.split(",") if n.strip()]
    bad = [n for n in names if not n.isidentifier()]
    if bad:
        raise JupyterCeleryError(f"not variable names: {', '.join(bad)}")
    return names


@magics_class
class CeleryMagics(Magics):
    """Magics that run notebook code on Celery workers and follow the jobs."""

    @magic_arguments()
    @argument(
        "-q", "--queue", default=DEFAULT_QUEUE, choices=QUEUES,
        help=f"queue to send the cell to (default: {DEFAULT_QUEUE})",
    )  # fmt: skip
    @argument("-i", "--inputs", help="comma-separated variables to send (default: the ones the cell reads)")
    @argument("-o", "--outputs", help="comma-separated variables to bring back (default: the ones it assigns)")
    @argument("--timeout", type=float, help="seconds the job may run before it is stopped")
    @argument("-n", "--name", default="", help="a name for the job, shown in listings")
    @argument(
        "--async", dest="asynchronous", action="store_true",
        help="return at once with the job's handle; outputs are bound only when asked "
        "(job.bind(), %%celery_wait). With --async, '-o NAME' naming a variable the cell does not "
        "assign names the handle (as ipyparallel's %%px -o)",
    )  # fmt: skip
    @argument("-j", "--job", help=f"store the job's handle in this variable (default with --async: {DEFAULT_HANDLE})")
    @cell_magic
    def celery(self, line: str, cell: str) -> Any:
        """Run the cell on a Celery worker and bring its results back into the notebook.

        The cell is compiled here first (a syntax error stops it before anything is sent).
        Variables the cell reads are sent with it; variables it assigns come back into the
        notebook; what it prints appears below the cell as it is printed; its last expression is
        shown as the cell's result. A live widget shows the job's state, progress (call
        ``progress(done, total, message)`` in the cell; tqdm loops count too), elapsed time and a
        Cancel button. An exception on the worker is raised here with the worker's traceback,
        whose line numbers are those of this cell. Interrupting the kernel cancels the job.

        Examples::

            %%celery
            total = sum(range(n))          # n is sent; total comes back
            total * 2                      # shown as the cell's result

            %%celery -q circuit_q --timeout 600 -n nightly-agg
            summary = frame.groupby("key").agg("sum")

            %%celery -i a,b -o c           # send exactly a and b, bring back only c
            c = a @ b
            tmp = c.sum()                  # not brought back

            %%celery --async -o job        # returns at once; the widget keeps updating
            for i in range(100):
                progress(i + 1, 100, f"step {i + 1}")
                result = expensive(i)

            job.result()                   # {'i': 99, 'result': ...}; job.bind() binds them
        """
        args = _parse_options(self.celery, line)
        shell = self.shell
        assert shell is not None
        client = get_client()
        analysis = check_cell(cell, f"Cell In[{shell.execution_count}]", 2)  # raises: nothing sent
        handle = args.job
        outputs = _names(args.outputs)
        names_handle = outputs is not None and len(outputs) == 1 and outputs[0] not in analysis.assigns
        if args.asynchronous and handle is None and names_handle:  # %%celery --async -o job
            assert outputs is not None
            handle, outputs = outputs[0], None
        spec, objects = self._build_spec(client, cell, args, analysis, outputs)
        job = client.submit(spec, objects=objects)
        if args.asynchronous:
            shell.user_ns[handle or DEFAULT_HANDLE] = job
            view = view_of(job, log=True)
            if view is None:
                print(f"job {job.id} submitted to {job.queue}; {handle or DEFAULT_HANDLE} is its handle")
                return None
            return job
        if handle:
            shell.user_ns[handle] = job
        job.sent_frames = self._sent_frames(spec)
        try:
            return self._wait_and_bind(job, strict=spec.strict_outputs)
        finally:
            job.sent_frames = {}  # snapshots held longer would make the notebook's next writes copy

    def _wait_and_bind(self, job: Job, *, strict: bool) -> Any:
        shell = self.shell
        assert shell is not None
        view = None
        if widgets_available():
            view = view_of(job, log=False)  # blocking: the output is the cell's own, below the widget
            if view is not None:
                view.show()
        follow_in_cell(job, text_progress=view is None)
        if view is not None:
            view.finish()  # the final state, sent while the cell still runs (headless runs keep it)
        values, skipped = job.outputs(strict=strict)
        shell.user_ns.update(values)
        for name, reason in skipped.items():
            print(f"jupyter-celery: {name!r} was not brought back: {reason}", file=sys.stderr)
        return job.value()

    def _sent_frames(self, spec: JobSpec) -> dict[str, Any]:
        """Copy-on-write snapshots of the frames the job took from the notebook, by store key."""
        shell = self.shell
        assert shell is not None
        sent: dict[str, Any] = {}
        for name, encoded in spec.inputs.items():
            if encoded.get("enc") == "frame" and "key" in encoded:
                value = shell.user_ns[name]
                copy = getattr(value, "copy", None)
                sent[encoded["key"]] = copy(deep=False) if copy is not None else value
        return sent

    def _build_spec(
        self, client: Client, cell: str, args: Any, analysis: CellAnalysis, outputs: list[str] | None
    ) -> tuple[JobSpec, list[str]]:
        """The job spec of the cell, and the store keys of its inputs (written or found in the store)."""
        shell = self.shell
        assert shell is not None
        wanted_inputs = _names(args.inputs)
        if wanted_inputs is None:
            hidden = shell.user_ns_hidden
            ns = shell.user_ns
            inputs = [n for n in analysis.reads if n in ns and n not in hidden and ns[n] is not runtime.progress]
        else:
            missing = [n for n in wanted_inputs if n not in shell.user_ns]
            if missing:
                raise EncodingError(missing[0], "it is not defined in the notebook")
            inputs = wanted_inputs
        job_id = new_job_id()
        settings = client.settings
        filename, first_line = f"Cell In[{shell.execution_count}]", 2  # line 1 is the %%celery line
        tag = ObjectTag(settings.owner, job_id, "input")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            encoded = {name: client.codec.encode(name, shell.user_ns[name], tag) for name in inputs}
        for warning in caught:  # e.g. a frame that travels pickled: shown against the cell, not our code
            warnings.warn_explicit(warning.message, warning.category, filename, first_line)
        objects = [key for value in encoded.values() for key in client.codec.keys_of(value)]
        spec = JobSpec(
            id=job_id,
            kind="cell",
            code=cell,
            queue=args.queue,
            name=args.name,
            owner=settings.owner,
            inputs=encoded,
            outputs=tuple(outputs if outputs is not None else analysis.assigns),
            strict_outputs=outputs is not None,
            timeout=args.timeout,
            filename=filename,
            first_line=first_line,
            environment=environment_fingerprint(),
        )
        return spec, objects

    @line_magic
    def celery_jobs(self, line: str) -> api.JobTable:
        """Your recent jobs (from any kernel) as a table: ``%celery_jobs [N]`` (default 20)."""
        limit = int(line.strip()) if line.strip() else 20
        return api.jobs(limit)

    @magic_arguments()
    @argument("job_id", help="the job's id (see %%celery_jobs)")
    @argument("--wait", action="store_true", help="block until the job ends, then bind its outputs")
    @line_magic
    def celery_attach(self, line: str) -> Any:
        """Re-attach to a job, e.g. after a kernel restart: its widget is rebuilt from the job's
        history, then follows it live; a succeeded job's outputs are bound into the notebook.

        Example::

            %celery_attach 3f2a9c0e5b8d4f7a9e1c2b3a4d5e6f70 --wait
        """
        args = parse_argstring(self.celery_attach, line)
        job = api.attach(args.job_id)
        if args.wait:
            return self._wait_and_bind(job, strict=False)
        if job.state == "succeeded" and not job.returns_value:
            job.bind()
        return job

    @line_magic
    def celery_cancel(self, line: str) -> None:
        """Cancel jobs by id: ``%celery_cancel ID [ID ...]``."""
        for job_id in line.split():
            asked = api.cancel(job_id)
            print(f"job {job_id}: {'cancel requested' if asked else 'already ended'}")

    @line_magic
    def celery_wait(self, line: str) -> None:
        """Wait until jobs end and bind their outputs: ``%celery_wait`` (every job of this kernel)
        or ``%celery_wait ID [ID ...]``."""
        client = get_client()
        jobs = [api.attach(i) for i in line.split()] if line.strip() else list(client.jobs.values())
        api.wait_for(jobs)
        failures = []
        for job in jobs:
            if job.returns_value:
                continue  # a function's result is job.result(), not variables to bind
            if job.state == "succeeded":
                job.bind()
            else:
                failures.append(f"{job.name or job.id}: {job.state}")
        if failures:
            print("not bound (the job did not succeed): " + "; ".join(failures), file=sys.stderr)
