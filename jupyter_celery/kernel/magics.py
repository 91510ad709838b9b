"""The ``%%celery`` cell magic."""

from __future__ import annotations

import sys
import warnings
from typing import Any

from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

from jupyter_celery.core.cellcode import check_cell
from jupyter_celery.core.errors import EncodingError, JupyterCeleryError
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.core.protocol import DEFAULT_QUEUE, QUEUES, JobSpec, environment_fingerprint, new_job_id
from jupyter_celery.kernel.client import Client, get_client


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
    """Magics that run notebook code on Celery workers."""

    @magic_arguments()
    @argument(
        "-q", "--queue", default=DEFAULT_QUEUE, choices=QUEUES,
        help=f"queue to send the cell to (default: {DEFAULT_QUEUE})",
    )  # fmt: skip
    @argument("-i", "--inputs", help="comma-separated variables to send (default: the ones the cell reads)")
    @argument("-o", "--outputs", help="comma-separated variables to bring back (default: the ones it assigns)")
    @argument("--timeout", type=float, help="seconds the job may run before it is stopped")
    @argument("-n", "--name", default="", help="a name for the job, shown in listings")
    @cell_magic
    def celery(self, line: str, cell: str) -> Any:
        """Run the cell on a Celery worker and bring its results back into the notebook.

        The cell is compiled here first (a syntax error stops it before anything is sent).
        Variables the cell reads are sent with it; variables it assigns come back into the
        notebook; what it prints appears below the cell; its last expression is shown as the
        cell's result. An exception on the worker is raised here with the worker's traceback,
        whose line numbers are those of this cell.

        Examples::

            %%celery
            total = sum(range(n))          # n is sent; total comes back
            total * 2                      # shown as the cell's result

            %%celery -q circuit_q --timeout 600 -n nightly-agg
            summary = frame.groupby("key").agg("sum")

            %%celery -i a,b -o c           # send exactly a and b, bring back only c
            c = a @ b
            tmp = c.sum()                  # not brought back
        """
        args = parse_argstring(self.celery, line)
        shell = self.shell
        assert shell is not None
        client = get_client()
        spec, objects = self._build_spec(client, cell, args)
        job = client.submit(spec, objects=objects)
        job.sent_frames = self._sent_frames(spec)
        try:
            manifest = job.wait()
            outputs, skipped = job.decode_outputs(manifest, strict=spec.strict_outputs)
            value = job.decode("value", manifest["value"]) if "value" in manifest else None
        finally:
            job.sent_frames = {}  # snapshots held longer would make the notebook's next writes copy
        shell.user_ns.update(outputs)
        for name, reason in skipped.items():
            print(f"jupyter-celery: {name!r} was not brought back: {reason}", file=sys.stderr)
        return value

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

    def _build_spec(self, client: Client, cell: str, args: Any) -> tuple[JobSpec, list[str]]:
        """The job spec of the cell, and the store keys of its inputs (written or found in the store)."""
        shell = self.shell
        assert shell is not None
        filename = f"Cell In[{shell.execution_count}]"
        first_line = 2  # the cell's first line is the %%celery line
        analysis = check_cell(cell, filename, first_line)  # raises CellSyntaxError: nothing is sent
        wanted_inputs = _names(args.inputs)
        wanted_outputs = _names(args.outputs)
        if wanted_inputs is None:
            hidden = shell.user_ns_hidden
            inputs = [n for n in analysis.reads if n in shell.user_ns and n not in hidden]
        else:
            missing = [n for n in wanted_inputs if n not in shell.user_ns]
            if missing:
                raise EncodingError(missing[0], "it is not defined in the notebook")
            inputs = wanted_inputs
        job_id = new_job_id()
        settings = client.settings
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
            outputs=tuple(wanted_outputs if wanted_outputs is not None else analysis.assigns),
            strict_outputs=wanted_outputs is not None,
            timeout=args.timeout,
            filename=filename,
            first_line=first_line,
            environment=environment_fingerprint(),
        )
        return spec, objects
