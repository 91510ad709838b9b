"""Waiting on several jobs at once, as with :mod:`concurrent.futures`: :func:`as_completed`,
:func:`wait` and :func:`gather`.

They take any mix of :class:`~jupyter_celery.Job` (cells, function calls) and map handles
(:func:`jupyter_celery.map`): anything with ``done()``, ``add_done_callback()``, ``result()`` and
``exception()``.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, Protocol, TypeVar

FIRST_COMPLETED = "FIRST_COMPLETED"
FIRST_EXCEPTION = "FIRST_EXCEPTION"
ALL_COMPLETED = "ALL_COMPLETED"
RETURN_WHEN = (FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED)


class Waitable(Protocol):
    """What these functions need of a job or a map."""

    def done(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def add_done_callback(self, fn: Callable[[Any], Any], /) -> None: ...

    def result(self, timeout: float | None = None) -> Any: ...

    def exception(self, timeout: float | None = None) -> BaseException | None: ...


W = TypeVar("W", bound=Waitable)


class DoneAndNotDone(NamedTuple):
    """What :func:`wait` returns: the jobs that have ended and the ones that have not."""

    done: set[Any]
    not_done: set[Any]


def _unique(jobs: Iterable[W]) -> list[W]:
    seen: set[int] = set()
    unique = []
    for job in jobs:
        if id(job) not in seen:
            seen.add(id(job))
            unique.append(job)
    return unique


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _ended(pending: list[W]) -> queue.SimpleQueue[W]:
    """A queue that receives each of ``pending`` when it ends."""
    ended: queue.SimpleQueue[W] = queue.SimpleQueue()
    for job in pending:
        job.add_done_callback(lambda _j, job=job: ended.put(job))  # type: ignore[misc]
    return ended


def _next(ended: queue.SimpleQueue[W], deadline: float | None) -> W | None:
    """The next job to end, waiting in short steps (Ctrl-C stays responsive); None at the deadline."""
    while True:
        remaining = _remaining(deadline)
        if remaining is not None and remaining <= 0:
            return None
        try:
            return ended.get(timeout=0.5 if remaining is None else min(0.5, remaining))
        except queue.Empty:
            continue


def as_completed(jobs: Iterable[W], timeout: float | None = None) -> Iterator[W]:
    """Yield the jobs as they end (those that have ended first), like ``concurrent.futures.as_completed``.

    Raises ``TimeoutError`` if some have not ended ``timeout`` seconds after the call.

    >>> jobs = [jc.submit(simulate, seed) for seed in range(8)]   # doctest: +SKIP
    >>> for job in jc.as_completed(jobs):                         # doctest: +SKIP
    ...     print(job.result())
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    unique = _unique(jobs)
    ended_before = [j for j in unique if j.done()]
    before = {id(j) for j in ended_before}
    pending = [j for j in unique if id(j) not in before]
    ended = _ended(pending)  # those that end from now on (even before the first yield)
    yield from ended_before
    left = {id(j) for j in pending}
    while left:
        finished = _next(ended, deadline)
        if finished is None:
            raise TimeoutError(f"{len(left)} (of {len(unique)}) jobs did not end within {timeout}s")
        if id(finished) in left:
            left.discard(id(finished))
            yield finished


def _failed(job: Waitable) -> bool:
    return not job.cancelled() and job.exception(0) is not None


def wait(jobs: Iterable[W], timeout: float | None = None, return_when: str = ALL_COMPLETED) -> DoneAndNotDone:
    """Wait for the jobs, like ``concurrent.futures.wait``: until one ends (``FIRST_COMPLETED``), one
    fails (``FIRST_EXCEPTION``; or all end), or all end (``ALL_COMPLETED``, the default), or
    ``timeout`` seconds passed. Returns ``(done, not_done)``, two sets.

    >>> done, not_done = jc.wait(jobs, return_when=jc.FIRST_COMPLETED)   # doctest: +SKIP
    """
    if return_when not in RETURN_WHEN:
        raise ValueError(f"return_when must be one of {', '.join(RETURN_WHEN)}, not {return_when!r}")
    deadline = None if timeout is None else time.monotonic() + timeout
    unique = _unique(jobs)
    done = [j for j in unique if j.done()]
    pending = [j for j in unique if not j.done()]

    def satisfied() -> bool:
        if not pending:
            return True
        if return_when == FIRST_COMPLETED:
            return bool(done)
        return return_when == FIRST_EXCEPTION and any(_failed(j) for j in done)

    ended = _ended(pending)
    while not satisfied():
        finished = _next(ended, deadline)
        if finished is None:
            break
        if finished in pending:
            pending.remove(finished)
            done.append(finished)
    return DoneAndNotDone(set(done), set(pending))


def gather(jobs: Iterable[Waitable], timeout: float | None = None, *, return_exceptions: bool = False) -> list[Any]:
    """The results of the jobs, in their order (waiting up to ``timeout`` seconds in all).

    The first error (in the jobs' order) is raised, unless ``return_exceptions=True``, which puts
    each error in its job's place, as ``asyncio.gather`` does.

    >>> jc.gather([jc.submit(pow, 2, n) for n in range(5)])   # doctest: +SKIP
    [1, 2, 4, 8, 16]
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    jobs = list(jobs)
    results: list[Any] = []
    for job in jobs:
        if return_exceptions:
            error = job.exception(_remaining(deadline))
            results.append(error if error is not None else job.result(0))
        else:
            results.append(job.result(_remaining(deadline)))
    return results
