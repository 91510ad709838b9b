"""What the scheduler needs to know about a notebook: its content and the parameters it declares.

Papermill injects parameters in a new cell after the cell tagged ``parameters``; the names that
cell assigns are the parameters a schedule may set. The notebook is read as JSON: no Jupyter
library is needed here.
"""

from __future__ import annotations

import ast
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jupyter_celery.core.errors import InvalidSchedule

PARAMETERS_TAG = "parameters"


@dataclass(frozen=True)
class NotebookFile:
    """A notebook's bytes and what they declare."""

    path: str
    content: bytes
    parameters: dict[str, str]  # name -> the default's source text, in declaration order
    has_parameters_cell: bool

    @property
    def digest(self) -> str:
        """A short content hash: uploads of the same content share a store key."""
        return hashlib.sha256(self.content).hexdigest()[:16]

    def check_parameters(self, given: dict[str, Any]) -> None:
        """Raise :class:`InvalidSchedule` for a parameter the notebook does not declare."""
        if not given:
            return
        if not self.has_parameters_cell:
            raise InvalidSchedule(
                f"notebook {self.path!r} has no cell tagged {PARAMETERS_TAG!r}, so it takes no parameters "
                f"(got {', '.join(sorted(given))}); tag the cell that assigns their defaults"
            )
        unknown = [name for name in given if name not in self.parameters]
        if unknown:
            declared = ", ".join(self.parameters) or "none"
            raise InvalidSchedule(
                f"unknown parameter(s) {', '.join(sorted(unknown))} for notebook {self.path!r}; "
                f"its {PARAMETERS_TAG!r} cell declares: {declared}"
            )


def _source(cell: dict[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def declared_parameters(source: str, path: str) -> dict[str, str]:
    """The names a ``parameters`` cell assigns at top level, with their default's source.

    >>> declared_parameters('region = "emea"\\ndays: int = 7  # a week', "n.ipynb")
    {'region': '"emea"', 'days': '7'}
    """
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise InvalidSchedule(
            f"the {PARAMETERS_TAG!r} cell of {path!r} does not parse: {exc.msg} (line {exc.lineno})"
        ) from None
    found: dict[str, str] = {}
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        default = (ast.get_source_segment(source, value) or "") if value is not None else ""
        for target in targets:
            if isinstance(target, ast.Name):
                found[target.id] = default
    return found


def parse_notebook(content: bytes, path: str) -> NotebookFile:
    """Read a notebook's bytes; a file that is not a notebook is a clear error."""
    try:
        document = json.loads(content)
        cells = document["cells"]
    except (ValueError, KeyError, TypeError):
        raise InvalidSchedule(f"{path!r} is not a Jupyter notebook (.ipynb JSON with cells)") from None
    for cell in cells:
        tags = cell.get("metadata", {}).get("tags", [])
        if cell.get("cell_type") == "code" and PARAMETERS_TAG in tags:
            return NotebookFile(path, content, declared_parameters(_source(cell), path), True)
    return NotebookFile(path, content, {}, False)


def read_notebook(path: str | Path) -> NotebookFile:
    """Read the notebook at ``path`` (relative to the current directory)."""
    file = Path(path).expanduser()
    if file.suffix != ".ipynb":
        raise InvalidSchedule(f"{str(path)!r} is not a notebook: schedules run .ipynb files")
    try:
        content = file.read_bytes()
    except OSError as exc:
        raise InvalidSchedule(f"cannot read notebook {str(path)!r}: {exc.strerror or exc}") from None
    return parse_notebook(content, str(path))
