"""A submitted job as the kernel sees it: its stream followed, its outcome decoded."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from jupyter_celery.core.errors import (
    ConnectionFailed,
    DecodingError,
    JobCancelled,
    JobFailed,
    JobLost,
    JobTimeout,
    RemoteError,
)
from jupyter_celery.core.events import START_ID, unreachable
from jupyter_celery.core.protocol import Event, EventKind

if TYPE_CHECKING:
    from jupyter_celery.kernel.client import Client


class Job:
    """A job submitted from this kernel (or re-attached by id).

    Its stream is read from the start, so nothing that happened before the reader began is
    missed; ``events`` keeps what was read.
    """

    def __init__(
        self, job_id: str, client: Client, *, name: str = "", queue: str = "", seen: list[Event] | None = None
    ) -> None:
        self.id = job_id
        self.name = name
        self.queue = queue
        self._client = client
        self.events: list[Event] = list(seen or [])
        self.last_id = self.events[-1].id if self.events else START_ID
        self.worker = ""
        # Frames this kernel sent, by store key, as copy-on-write snapshots taken at submit: an output with
        # the same key (the same bytes) is bound from here instead of being downloaded again.
        self.sent_frames: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.name or ''} on {self.queue}: {self.state}>"

    @property
    def terminal(self) -> Event | None:
        """The event that ended the job, if it has ended."""
        return self.events[-1] if self.events and self.events[-1].kind.terminal else None

    @property
    def state(self) -> str:
        if not self.events:
            return "unknown"
        return {EventKind.STARTED: "running"}.get(self.events[-1].kind, self.events[-1].kind.value)

    def follow(self, on_event: Callable[[Event], None] | None = None) -> Event:
        """Read the stream until the terminal event, calling ``on_event`` for each event."""
        log = self._client.events
        block = self._client.settings.block_seconds
        while self.terminal is None:
            try:
                batch = log.read({self.id: self.last_id}, block)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                raise unreachable(log.url, exc) from exc
            for _job, event in batch:
                self.last_id = event.id
                if event.kind is EventKind.STARTED:
                    self.worker = str(event.fields.get("worker", ""))
                self.events.append(event)
                if on_event is not None:
                    on_event(event)
                if event.kind.terminal:
                    break
        terminal = self.terminal
        assert terminal is not None
        return terminal

    def wait(self, stdout: TextIO | None = None, stderr: TextIO | None = None) -> dict[str, Any]:
        """Follow the job to its end, echoing its output; return the result manifest or raise."""

        def echo(event: Event) -> None:
            if event.kind is EventKind.STDOUT:
                (stdout or sys.stdout).write(event.fields.get("text", ""))
            elif event.kind is EventKind.STDERR:
                (stderr or sys.stderr).write(event.fields.get("text", ""))

        try:
            terminal = self.follow(echo)
        except KeyboardInterrupt:
            self.cancel()
            raise
        return self.outcome(terminal)

    def outcome(self, terminal: Event) -> dict[str, Any]:
        """The result manifest of a succeeded job; the matching error for any other ending."""
        fields = terminal.fields
        if terminal.kind is EventKind.SUCCEEDED:
            result: dict[str, Any] = fields.get("result") or {}
            return result
        message = str(fields.get("message") or fields.get("reason") or terminal.kind.value)
        if terminal.kind is EventKind.CANCELLED:
            raise JobCancelled(self.id, f"job {self.id} was cancelled: {message}")
        if terminal.kind is EventKind.LOST:
            raise JobLost(self.id, f"job {self.id} was lost: {message}")
        if fields.get("reason") == "timeout":
            raise JobTimeout(self.id, f"job {self.id}: {message}")
        if fields.get("traceback"):
            raise RemoteError(
                self.id,
                str(fields.get("error_type")),
                str(fields.get("message", "")),
                str(fields["traceback"]),
                self.worker,
            )
        raise JobFailed(self.id, f"job {self.id} failed: {fields.get('error_type')}: {message}")

    def decode_outputs(self, manifest: dict[str, Any], *, strict: bool) -> tuple[dict[str, Any], dict[str, str]]:
        """The job's output variables, decoded, and the ones that were not (name -> reason).

        With ``strict`` a value that cannot be decoded here raises :class:`DecodingError`.
        """
        values: dict[str, Any] = {}
        skipped: dict[str, str] = dict(manifest.get("skipped", {}))
        for name, encoded in manifest.get("outputs", {}).items():
            try:
                values[name] = self.decode(name, encoded)
            except DecodingError as exc:
                if strict:
                    raise
                skipped[name] = exc.reason
        return values, skipped

    def decode(self, name: str, encoded: dict[str, Any]) -> Any:
        """One output value. A frame this kernel sent with the job comes from its snapshot, not the store.

        (pandas' copy-on-write makes the shallow copy an independent frame; a pyarrow Table is immutable.)
        """
        snapshot = self.sent_frames.get(encoded.get("key", "")) if encoded.get("enc") == "frame" else None
        if snapshot is not None:
            copy = getattr(snapshot, "copy", None)
            return copy(deep=False) if copy is not None else snapshot
        return self._client.codec.decode(name, encoded)

    def cancel(self) -> None:
        """Ask the workers to drop or stop the job."""
        with contextlib.suppress(OSError, ConnectionFailed):
            self._client.revoke(self.id)
