"""Schedules and runs as tables: plain text for the CLI and ``repr``, HTML for notebooks."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from jupyter_celery.scheduling.model import ScheduleSpec
from jupyter_celery.scheduling.runs import RunRecord

SCHEDULE_COLUMNS = ("name", "notebook", "when", "parameters", "queue", "state", "next run")
RUN_COLUMNS = ("run", "trigger", "state", "started", "duration", "failed cell", "error", "output")


def when(moment: float | datetime | None, zone: Any = None) -> str:
    """A time for people: ``2026-11-30 06:00:00 CET`` (UTC unless ``zone`` is given)."""
    if moment is None:
        return ""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, timezone.utc)
    if zone is not None:
        moment = moment.astimezone(zone)
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


def schedule_row(spec: ScheduleSpec, next_runs: Sequence[datetime]) -> list[str]:
    return [
        spec.name, spec.notebook, spec.timing, json.dumps(spec.parameters), spec.queue,
        "paused" if spec.paused else "active", when(next_runs[0]) if next_runs else "",
    ]  # fmt: skip


def run_row(run: RunRecord) -> list[str]:
    duration = f"{run.duration:.1f}s" if run.duration is not None else ""
    failed = "" if run.failed_cell is None else str(run.failed_cell)
    return [
        run.id, run.trigger, run.state, when(run.started or run.queued), duration, failed,
        run.error[:80], run.output_html or run.output_notebook,
    ]  # fmt: skip


def text_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned columns, one line per row."""
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)


def html_table(columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    cap = f"<caption style='text-align:left'>{html.escape(caption)}</caption>" if caption else ""
    return f"<table class='jupyter-celery'>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def describe(spec: ScheduleSpec, next_runs: Sequence[datetime]) -> list[tuple[str, str]]:
    """A schedule's fields for people, in order."""
    return [
        ("name", spec.name), ("notebook", spec.notebook), ("stored as", spec.notebook_key),
        ("when", spec.timing), ("state", "paused" if spec.paused else "active"),
        ("parameters", json.dumps(spec.parameters)), ("queue", spec.queue), ("kernel", spec.kernel),
        ("timeout", f"{spec.timeout:g}s" if spec.timeout else "the queue's limits"),
        ("retries", f"{spec.retries} ({spec.retry_delay:g}s apart)"), ("overlap", spec.overlap),
        ("next runs", ", ".join(when(t) for t in next_runs) or "none (paused)"),
    ]  # fmt: skip
