"""A ``%%celery`` cell as a job's work: its input variables in, its code run, its output variables out.

Large inputs are loaded from the store when the cell uses them (:mod:`jupyter_celery.worker.namespace`).
"""

from __future__ import annotations

from typing import Any

from jupyter_celery.core import runtime
from jupyter_celery.core.cellcode import CompiledCell, compile_cell, register_source
from jupyter_celery.core.codec import Codec, Encoded
from jupyter_celery.core.errors import EncodingError, JupyterCeleryError
from jupyter_celery.core.objects import ObjectTag
from jupyter_celery.worker.capture import JobReporter
from jupyter_celery.worker.execution import VALUE, Work, failure_reason
from jupyter_celery.worker.namespace import LazyBuiltins, build_namespace


class CellWork(Work):
    """Runs the cell's code in a fresh namespace that holds its inputs and ``progress``/``display``."""

    compiled: CompiledCell
    value: Any = None
    lazy: LazyBuiltins | None = None

    def load(self, codec: Codec) -> None:
        spec = self.spec
        self.compiled = compile_cell(spec.code, spec.filename, spec.first_line)
        self.namespace, self.lazy = build_namespace(spec, codec)
        self.namespace.update(progress=runtime.progress, display=runtime.display)
        register_source(spec.code, spec.filename, spec.first_line)

    def run(self, reporter: JobReporter) -> None:
        exec(self.compiled.body, self.namespace)
        if self.compiled.final_expression is not None:
            self.value = eval(self.compiled.final_expression, self.namespace)

    def input_failure(self) -> JupyterCeleryError | None:
        return None if self.lazy is None else self.lazy.failure

    def collect(self, codec: Codec) -> dict[str, Any]:
        tag = self.tag
        outputs, skipped = self._outputs(codec, tag)
        manifest: dict[str, Any] = {"outputs": outputs, "skipped": skipped}
        if self.value is not None:
            try:
                manifest[VALUE] = codec.encode(VALUE, self.value, tag)
            except EncodingError as exc:
                if failure_reason(exc, "") == "store":
                    raise
                manifest[VALUE] = {"enc": "repr", "text": repr(self.value), "reason": exc.reason}
        return manifest

    def _outputs(self, codec: Codec, tag: ObjectTag) -> tuple[dict[str, Encoded], dict[str, str]]:
        """Encode the wanted outputs; in non-strict mode unencodable or missing ones are skipped.

        A failure of the store is never skipped: it fails the job.
        """
        spec, namespace = self.spec, self.namespace
        outputs: dict[str, Encoded] = {}
        skipped: dict[str, str] = {}
        for name in spec.outputs:
            if name not in namespace:
                if spec.strict_outputs:
                    raise EncodingError(name, "the cell did not assign it")
                continue
            try:
                outputs[name] = codec.encode(name, namespace[name], tag)
            except EncodingError as exc:
                if spec.strict_outputs or failure_reason(exc, "") == "store":
                    raise
                skipped[name] = exc.reason
        return outputs, skipped
