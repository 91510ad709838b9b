"""The ending of a job or a map: wait for it (Ctrl-C stays responsive), and run callbacks once when it comes."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)


class Completion(Generic[T]):
    """Set once when ``owner`` ends; callbacks get ``owner``, like ``concurrent.futures`` done callbacks."""

    def __init__(self, owner: T, what: str) -> None:
        self._owner = owner
        self._what = what  # "job 3f2a...", for the log of a failing callback
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[T], Any]] = []

    def is_set(self) -> bool:
        return self._event.is_set()

    def set(self) -> None:
        """Mark the ending and run the callbacks (once: a second call does nothing)."""
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            self._run(callback)

    def add_callback(self, fn: Callable[[T], Any]) -> None:
        """Call ``fn(owner)`` when it ends; at once, in this thread, if it has ended."""
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(fn)
                return
        self._run(fn)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until it ends (or ``timeout`` seconds passed); return whether it ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._event.is_set():
            remaining = 0.5 if deadline is None else min(0.5, deadline - time.monotonic())
            if remaining <= 0:
                return False
            self._event.wait(remaining)  # short waits keep Ctrl-C responsive
        return True

    def _run(self, callback: Callable[[T], Any]) -> None:
        try:
            callback(self._owner)
        except Exception:  # like concurrent.futures: a failing callback is logged, not raised
            log.exception("done callback of %s failed", self._what)
