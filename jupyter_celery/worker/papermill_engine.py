"""A papermill engine that reports each executed cell and knows which cell is running.

Imported only while a notebook runs (papermill pulls in nbclient and friends): the worker side
loads none of it at import time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from papermill.engines import NBClientEngine, NotebookExecutionManager, papermill_engines

ENGINE_NAME = "jupyter_celery"


class Tracker:
    """Follows a run: ``on_cell(done, total, cell)`` after each cell; ``current`` is the running cell's index."""

    def __init__(self, on_cell: Callable[[int, int, dict[str, Any]], None]) -> None:
        self.on_cell = on_cell
        self.current: int | None = None
        self.notebook: Any = None


class _Manager(NotebookExecutionManager):  # type: ignore[misc]
    def __init__(self, nb: Any, tracker: Tracker, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.tracker = tracker
        tracker.notebook = nb

    def cell_start(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        self.tracker.current = cell_index
        super().cell_start(cell, cell_index, **kwargs)

    def cell_complete(self, cell: Any, cell_index: int | None = None, **kwargs: Any) -> None:
        super().cell_complete(cell, cell_index, **kwargs)
        if cell_index is not None:
            self.tracker.on_cell(cell_index + 1, len(self.nb.cells), cell)


class TrackingEngine(NBClientEngine):  # type: ignore[misc]
    """papermill's nbclient engine, with a :class:`Tracker` passed as ``tracker=``."""

    @classmethod
    def execute_notebook(
        cls, nb: Any, kernel_name: str, *, output_path: str | None = None, progress_bar: bool = False,
        log_output: bool = False, autosave_cell_every: int = 30, tracker: Tracker, **kwargs: Any,
    ) -> Any:  # fmt: skip
        nb_man = _Manager(
            nb, tracker, output_path=output_path, progress_bar=False, log_output=log_output,
            autosave_cell_every=autosave_cell_every,
        )  # fmt: skip
        nb_man.notebook_start()
        try:
            cls.execute_managed_notebook(nb_man, kernel_name, log_output=log_output, **kwargs)
        finally:
            nb_man.cleanup_pbar()
            nb_man.notebook_complete()
        return nb_man.nb


papermill_engines.register(ENGINE_NAME, TrackingEngine)
