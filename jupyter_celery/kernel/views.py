"""How a job shows in a notebook: a live ipywidgets view (or compact text in a terminal).

Widgets are created and displayed in the cell's own thread. Afterwards only traits change: the
reader thread marks a view dirty and queues its log lines; one ticker thread per kernel applies
the changes at most ``RATE`` times a second per view, batched with ``hold_sync()`` (jupyter-server
drops IOPub above its rate limit), and ticks the elapsed time. Nothing is printed or displayed
from a thread: log lines go through ``Output.append_stdout`` (DESIGN §6).
"""

from __future__ import annotations

import functools
import html
import importlib.util
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from jupyter_celery.core.protocol import Event, EventKind

if TYPE_CHECKING:
    from jupyter_celery.kernel.job import Job

RATE = 4.0  # widget updates per second and view, at most
STATE_COLOURS = {
    "queued": "#6b7280",
    "running": "#2563eb",
    "retrying": "#d97706",
    "succeeded": "#16a34a",
    "failed": "#dc2626",
    "cancelled": "#6b7280",
    "lost": "#dc2626",
}
LOG_KINDS = (EventKind.STDOUT, EventKind.STDERR, EventKind.DISPLAY)
BAR_STYLES = {"succeeded": "success", "failed": "danger", "lost": "danger", "cancelled": "warning"}


def widgets_available() -> bool:
    """Whether this kernel talks to a front-end that can show widgets (not a terminal IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None and _ipywidgets_installed()


@functools.cache
def _ipywidgets_installed() -> bool:
    return importlib.util.find_spec("ipywidgets") is not None


def elapsed_text(job: Job, now: float | None = None) -> str:
    """Seconds since the job started (or was submitted); tenths once it has ended."""
    now = time.time() if now is None else now
    start = job.started_at or job.submitted_at
    seconds = max(0.0, (job.ended_at or now) - start)
    if job.ended_at is not None and seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def progress_text(job: Job) -> str:
    if job.progress is None:
        return ""
    done, total, message = job.progress
    amount = f"{done:g}/{total:g} ({100 * done / total:.0f}%)" if total else f"{done:g} done"
    return f"{amount} {message}".strip()


def status_line(job: Job) -> str:
    """One line of plain text: ``[job 1a2b3c4d] running on python_q@host 3.2s 45/100 (45%) step``."""
    where = f" on {job.worker}" if job.worker else ""
    extra = " (cancel requested)" if job.cancel_requested and not job.done() else ""
    note = f" - {job.note}" if job.note else ""
    parts = [f"[job {job.name or job.id[:8]}] {job.state}{where}{extra}", elapsed_text(job), progress_text(job)]
    return " ".join(p for p in parts if p) + note


class LiveView:
    """A widget that the ticker thread keeps up to date: changes are marked from any thread with
    :meth:`touch`; :meth:`refresh` (in the ticker thread) applies them in one batch; :meth:`status`
    is its plain-text form."""

    widget: Any

    def __init__(self) -> None:
        self._dirty = True
        self._lock = threading.Lock()
        self._last = 0.0
        self.finished = False
        self.handles: list[Any] = []  # IPython DisplayHandles of this view

    def touch(self) -> None:
        with self._lock:
            self._dirty = True
        _ticker().add(self)

    def due(self, now: float, tick: float) -> bool:
        """Dirty views render at most RATE times a second; live ones re-render every ``tick`` s."""
        waited = now - self._last
        return (self._dirty and waited >= 1.0 / RATE) or (not self.finished and waited >= tick)

    def _mark_clean(self) -> None:
        """Called under the lock at the start of a refresh."""
        self._dirty = False
        self._last = time.monotonic()

    def refresh(self) -> None:
        raise NotImplementedError

    def status(self) -> str:
        raise NotImplementedError

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The widget, with a status line as its plain-text form (what renderers without widgets show)."""
        bundle: dict[str, Any] = dict(self.widget._repr_mimebundle_(**kwargs) or {})
        bundle["text/plain"] = self.status()
        return bundle

    def show(self) -> None:
        """Display the widget (in the calling cell), remembering where, so the final state can replace it."""
        from IPython.display import display

        self.handles.append(display(self, display_id=True))

    def finish(self) -> None:
        """Render the final state now, and refresh the plain-text form of every display of it.

        Called from the cell's own thread (a blocking cell, ``wait_all()``), while the cell still
        runs: headless runs (nbclient, papermill, nbval) keep what is sent before the cell ends.
        """
        self.refresh()
        for handle in self.handles:
            if handle is not None:
                handle.update(self)


class JobView(LiveView):
    """The live widget of one job: state, progress bar, message, elapsed time, log, Cancel button."""

    def __init__(self, job: Job, history: list[Event], *, log: bool = True) -> None:
        import ipywidgets as w

        super().__init__()
        self.job = job
        self.log_enabled = log
        self.header = w.HTML()
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=1.0, layout=w.Layout(width="100%"))
        self.message = w.HTML()
        self.cancel_button = w.Button(description="Cancel", icon="stop", layout=w.Layout(width="auto"))
        self.cancel_button.on_click(lambda _b: job.cancel())
        self.log = w.Output(layout=w.Layout(max_height="240px", overflow="auto", display="" if log else "none"))
        top = w.HBox([self.header, self.cancel_button], layout=w.Layout(justify_content="space-between"))
        self.widget = w.VBox([top, self.bar, self.message, self.log])
        self._pending: list[Event] = [e for e in history if e.kind in LOG_KINDS] if log else []
        self.refresh()

    def on_event(self, event: Event) -> None:
        """Called from the reader thread: remember what changed; the ticker renders it."""
        with self._lock:
            if event.kind in LOG_KINDS and self.log_enabled:
                self._pending.append(event)
            self._dirty = True
        _ticker().add(self)

    def status(self) -> str:
        return status_line(self.job)

    def refresh(self) -> None:
        """Apply every pending change in one batch of trait updates."""
        with self._lock:
            pending, self._pending = self._pending, []
            self._mark_clean()
        job = self.job
        state = job.state
        with self.widget.hold_sync():
            self.header.value = self._header_html(job, state)
            update_bar(self.bar, state, job.progress)
            self.message.value = html.escape(job.progress[2]) if job.progress and job.progress[2] else ""
            if job.note and not job.done():
                self.message.value = f"<i>{html.escape(job.note)}</i>"
            self.cancel_button.disabled = job.done() or job.cancel_requested
            for event in pending:
                if event.kind is EventKind.STDOUT:
                    self.log.append_stdout(event.fields.get("text", ""))
                elif event.kind is EventKind.STDERR:
                    self.log.append_stderr(event.fields.get("text", ""))
                else:
                    self.log.append_display_data(_Bundle(event.fields.get("data") or {}))
        self.finished = job.done()

    def _header_html(self, job: Job, state: str) -> str:
        colour = STATE_COLOURS.get(state, "#6b7280")
        where = f" on <code>{html.escape(job.worker)}</code>" if job.worker and state != "queued" else ""
        if job.cancel_requested and not job.done():
            state = f"{state}, cancel requested"
        label = html.escape(job.name) if job.name else f"job <code>{job.id[:8]}</code>"
        return (
            f"<b>{label}</b> <span style='color:{colour};font-weight:bold'>&#9679; {html.escape(state)}</span>"
            f"{where} &middot; {elapsed_text(job)}"
        )


def update_bar(bar: Any, state: str, progress: tuple[float, float | None, str] | None) -> None:
    """Set a progress bar from a state and a (done, total, message) progress."""
    if state in BAR_STYLES:
        bar.bar_style = BAR_STYLES[state]
        if state == "succeeded":
            bar.value = bar.max
        return
    bar.bar_style = "info" if state == "running" else ""
    if progress is None:
        return
    done, total, _message = progress
    if total:
        bar.max = total
        bar.value = min(done, total)
    else:  # no total: an indeterminate (full, striped-looking) bar and the count in the message
        bar.max, bar.value = 1.0, 1.0


class _Bundle:
    """Displays a MIME bundle sent by a job's display() call."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return self.data


class _Ticker:
    """One thread per kernel that renders dirty views and ticks the elapsed time of live ones."""

    def __init__(self) -> None:
        self._views: weakref.WeakSet[LiveView] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, view: LiveView) -> None:
        with self._lock:
            self._views.add(view)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="jupyter-celery-views", daemon=True)
                self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                views = list(self._views)
                if not views:
                    self._thread = None
                    return
            now = time.monotonic()
            tick = max(1.0, len(views) / 100)  # many live views tick less often: IOPub has a rate limit
            for view in views:
                if view.due(now, tick):
                    try:
                        view.refresh()
                    except Exception:  # a closed comm must not stop the other views
                        view.finished = True
                if view.finished:
                    with self._lock:
                        self._views.discard(view)
            self._wake.wait(1.0 / RATE)
            self._wake.clear()


_the_ticker: _Ticker | None = None
_ticker_lock = threading.Lock()


def _ticker() -> _Ticker:
    global _the_ticker  # noqa: PLW0603 - one ticker per kernel
    with _ticker_lock:
        if _the_ticker is None:
            _the_ticker = _Ticker()
        return _the_ticker


def view_of(job: Job, *, log: bool = True) -> JobView | None:
    """The job's widget (made on first use, in the calling thread), or None without widgets."""
    if job.view is None and not widgets_available():
        return None
    view: JobView = job.with_view(lambda history: JobView(job, history, log=log))
    _ticker().add(view)
    return view


def show(job: Job, *, log: bool = True) -> None:
    """Display the job: its live widget, or a status line where widgets cannot show."""
    view = view_of(job, log=log)
    if view is not None:
        view.show()
    else:
        print(status_line(job))
