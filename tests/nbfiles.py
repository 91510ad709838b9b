"""Small notebooks written for a test (as .ipynb JSON)."""

from __future__ import annotations

import json
from pathlib import Path


def write_notebook(path: Path, *cells: str, parameters: str | None = None) -> Path:
    """A notebook of code ``cells``; with ``parameters``, a cell tagged ``parameters`` comes first."""
    sources = ([(parameters, ["parameters"])] if parameters is not None else []) + [(c, []) for c in cells]
    document = {
        "cells": [
            {"cell_type": "code", "execution_count": None, "metadata": {"tags": tags}, "outputs": [], "source": source}
            for source, tags in sources
        ],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
        "nbformat": 4,
        "nbformat_minor": 4,
    }
    path.write_text(json.dumps(document))
    return path


def cell_text(document: dict) -> str:
    """Everything the cells of an executed notebook printed or raised, as one string."""
    out = []
    for cell in document["cells"]:
        for output in cell.get("outputs", []):
            text = output.get("text", "")
            out.append("".join(text) if isinstance(text, list) else text)
            if output.get("output_type") == "error":
                out.append(f"{output['ename']}: {output['evalue']}")
    return "".join(out)


def finished(registry, run_id: str):
    """The run's record once it has ended (None before), for ``wait_until``."""
    run = registry.runs.get(run_id)
    return run if run is not None and run.finished else None


def gated_notebook(path: Path) -> Path:
    """A notebook that runs until the file named by its ``gate`` parameter exists: a run the test ends."""
    return write_notebook(
        path,
        "import os, time\nwhile not os.path.exists(gate):\n    time.sleep(0.05)\nprint('released')",
        parameters="gate = ''",
    )
