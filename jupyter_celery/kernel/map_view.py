"""How a map shows in a notebook: one live widget for all its chunks (or a status line in a terminal).

Items done / total on a bar, failures, throughput and the estimated time left, and a Cancel
button that stops the whole map. Updated by the same ticker thread as job widgets
(:mod:`jupyter_celery.kernel.views`), a few times a second while the map runs.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

from jupyter_celery.kernel.views import RATE, STATE_COLOURS, LiveView, _ticker, widgets_available

if TYPE_CHECKING:
    from jupyter_celery.kernel.mapping import MapJob, MapProgress

MAP_BAR_STYLES = {"succeeded": "success", "failed": "danger", "cancelled": "warning", "running": "info"}


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m {secs:02d}s"


def map_status(mapping: MapJob, p: MapProgress | None = None) -> str:
    """One line: ``[map simulate] running 1234/10000 items (12%), 3 failed, 2400 items/s, ETA 3.6s``."""
    p = p or mapping.progress()
    percent = f" ({100 * p.done / p.total:.0f}%)" if p.total else ""
    parts = [f"[map {mapping.name}] {p.state}", f"{p.done:g}/{p.total} items{percent}"]
    if p.failed:
        parts.append(f"{p.failed} failed")
    if p.rate:
        parts.append(f"{p.rate:,.0f} items/s")
    if p.eta is not None:
        parts.append(f"ETA {_duration(p.eta)}")
    parts.append(f"{_duration(p.elapsed)} in {p.chunks} chunks")
    if mapping.cancel_requested and not mapping.done():
        parts.append("cancel requested")
    return ", ".join(parts)


class MapView(LiveView):
    """The live widget of a map: state, items done / total, failures, throughput, ETA, Cancel button."""

    def __init__(self, mapping: MapJob) -> None:
        import ipywidgets as w

        super().__init__()
        self.mapping = mapping
        self.header = w.HTML()
        self.bar = w.FloatProgress(value=0.0, min=0.0, max=float(max(1, mapping.total)), layout=w.Layout(width="100%"))
        self.message = w.HTML()
        self.cancel_button = w.Button(description="Cancel", icon="stop", layout=w.Layout(width="auto"))
        self.cancel_button.on_click(lambda _b: mapping.cancel())
        top = w.HBox([self.header, self.cancel_button], layout=w.Layout(justify_content="space-between"))
        self.widget = w.VBox([top, self.bar, self.message])
        self.refresh()

    def status(self) -> str:
        return map_status(self.mapping)

    def due(self, now: float, tick: float) -> bool:
        """A running map re-renders a few times a second (its chunks' progress moves without events to it)."""
        return super().due(now, tick) or (not self.finished and now - self._last >= 1.0 / RATE)

    def refresh(self) -> None:
        with self._lock:
            self._mark_clean()
        mapping = self.mapping
        p = mapping.progress()
        colour = STATE_COLOURS.get(p.state, "#6b7280")
        state = f"{p.state}, cancel requested" if mapping.cancel_requested and not mapping.done() else p.state
        failed = f" &middot; <span style='color:#dc2626'>{p.failed} failed</span>" if p.failed else ""
        with self.widget.hold_sync():
            self.header.value = (
                f"<b>map {html.escape(mapping.name)}</b> "
                f"<span style='color:{colour};font-weight:bold'>&#9679; {html.escape(state)}</span> "
                f"&middot; {p.done:,.0f}/{p.total:,} items{failed}"
            )
            self.bar.value = min(p.done, float(p.total))
            self.bar.bar_style = MAP_BAR_STYLES.get(p.state, "")
            rate = f"{p.rate:,.0f} items/s" if p.rate else "measuring"
            eta = f" &middot; ETA {_duration(p.eta)}" if p.eta is not None else ""
            self.message.value = f"{rate}{eta} &middot; {_duration(p.elapsed)} &middot; {p.chunks} chunks"
            self.cancel_button.disabled = mapping.done() or mapping.cancel_requested
        self.finished = mapping.done()


def map_view_of(mapping: MapJob) -> MapView | None:
    """The map's widget (made on first use, in the calling thread), or None without widgets."""
    if mapping.view is None:
        if not widgets_available():
            return None
        mapping.view = MapView(mapping)
    view: MapView = mapping.view
    _ticker().add(view)
    return view


def show_map(mapping: MapJob) -> None:
    """Display the map: its live widget, or a status line where widgets cannot show."""
    view = map_view_of(mapping)
    if view is not None:
        view.show()
    else:
        print(map_status(mapping))
