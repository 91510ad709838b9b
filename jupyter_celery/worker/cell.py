"""A ``%%celery`` cell as a job's work: its input variables in, its code run, its output variables out."""

from __future__ import annotations

import builtins
from typing import Any

from jupyter_celery.core import runtime
from jupyter_celery.core.cellcode import CompiledCell, compile_cell, register_source
from jupyter_celery.core.codec import Codec, Encoded
from jupyter_celery.core.errors import EncodingError
from jupyter_celery.worker.capture import JobReporter
from jupyter_celery.worker.execution import VALUE, Work


class CellWork(Work):
    """Runs the cell's code in a fresh namespace that holds its inputs and ``progress``/``display``."""

    compiled: CompiledCell
    value: Any = None

    def load(self, codec: Codec) -> None:
        spec = self.spec
        self.namespace: dict[str, Any] = {
            "__name__": "__main__",
            "__builtins__": builtins,
            "progress": runtime.progress,
            "display": runtime.display,
        }
        self.compiled = compile_cell(spec.code, spec.filename, spec.first_line)
        for name, encoded in spec.inputs.items():
            self.namespace[name] = codec.decode(name, encoded)
        register_source(spec.code, spec.filename, spec.first_line)

    def run(self, reporter: JobReporter) -> None:
        exec(self.compiled.body, self.namespace)
        if self.compiled.final_expression is not None:
            self.value = eval(self.compiled.final_expression, self.namespace)

    def collect(self, codec: Codec) -> dict[str, Any]:
        prefix = f"{self.key_prefix}/out"
        outputs, skipped = self._outputs(codec, prefix)
        manifest: dict[str, Any] = {"outputs": outputs, "skipped": skipped}
        if self.value is not None:
            try:
                manifest[VALUE] = codec.encode(VALUE, self.value, prefix)
            except EncodingError as exc:
                manifest[VALUE] = {"enc": "repr", "text": repr(self.value), "reason": exc.reason}
        return manifest

    def _outputs(self, codec: Codec, prefix: str) -> tuple[dict[str, Encoded], dict[str, str]]:
        """Encode the wanted outputs; in non-strict mode unencodable or missing ones are skipped."""
        spec, namespace = self.spec, self.namespace
        outputs: dict[str, Encoded] = {}
        skipped: dict[str, str] = {}
        for name in spec.outputs:
            if name not in namespace:
                if spec.strict_outputs:
                    raise EncodingError(name, "the cell did not assign it")
                continue
            try:
                outputs[name] = codec.encode(name, namespace[name], prefix)
            except EncodingError as exc:
                if spec.strict_outputs:
                    raise
                skipped[name] = exc.reason
        return outputs, skipped
