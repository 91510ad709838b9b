"""How many items of a map go into each chunk (one Celery task).

A chunk targets ``TARGET_SECONDS`` of work: long enough that the cost of a task (a message, a job
record, a few events: a few milliseconds) is small beside it, short enough that progress is live,
a cancel stops soon and the work spreads over every worker.

The cost of an item is not known before it runs, so a map starts with one-item chunks, as many
as it keeps in flight (so every worker gets work at once: no slow start, even when one item takes
a minute). Each chunk measures its items' run time on the worker; from the first measurement on,
chunks hold ``TARGET_SECONDS / (seconds per item)`` items (the average over every finished
chunk), at most ``MAX_CHUNK``. Near the end a chunk holds at most its share of the remaining items
(``remaining / slots``), so the last ones are spread over the workers rather than left to one, but
never less than a quarter of the target's worth of items: splitting work shorter than that costs
more in task overhead than it gains.

>>> sizer = ChunkSizer(slots=2)
>>> sizer.next_size(10_000)               # nothing measured yet: a one-item probe
1
>>> sizer.record(items=1, seconds=0.01)
>>> sizer.next_size(9_999)                # 10 ms per item: 25 items make a quarter of a second
25
>>> sizer.next_size(30)                   # the end: half of what is left each, for the two workers
15
>>> sizer.next_size(8)                    # but not below a quarter of the target
6
>>> sizer = ChunkSizer(slots=2); sizer.record(items=1, seconds=0.000_002)
>>> sizer.next_size(9_999)                # 2 us per item: 20 ms of work in all is not worth splitting
9999
>>> ChunkSizer(slots=2, chunksize=100).next_size(10_000)   # chunksize= overrides
100
"""

from __future__ import annotations

import math

TARGET_SECONDS = 0.25
MAX_CHUNK = 10_000


class ChunkSizer:
    """Chooses chunk sizes for one map from the run times its finished chunks measured."""

    def __init__(self, slots: int, chunksize: int | None = None, target: float = TARGET_SECONDS) -> None:
        if chunksize is not None and chunksize < 1:
            raise ValueError(f"chunksize must be >= 1, got {chunksize}")
        self.slots = max(1, slots)
        self.chunksize = chunksize
        self.target = target
        self.items = 0  # items of the finished chunks that measured their run time
        self.seconds = 0.0

    def record(self, items: int, seconds: float) -> None:
        """A chunk of ``items`` items ran them in ``seconds`` (on the worker, without the task's overhead)."""
        if items > 0 and seconds >= 0:
            self.items += items
            self.seconds += seconds

    @property
    def per_item(self) -> float | None:
        """Measured seconds per item (None before any chunk finished)."""
        return self.seconds / self.items if self.items else None

    def next_size(self, remaining: int) -> int:
        """The size of the next chunk, when ``remaining`` items are still to be sent."""
        if remaining <= 0:
            return 0
        if self.chunksize is not None:
            return min(self.chunksize, remaining)
        per_item = self.per_item
        if per_item is None:
            return 1
        ideal, floor = (self._items_in(self.target), self._items_in(self.target / 4))
        share = math.ceil(remaining / self.slots)
        return max(1, min(remaining, max(min(ideal, share), floor)))

    def _items_in(self, seconds: float) -> int:
        """How many items run in ``seconds`` (1 to MAX_CHUNK)."""
        per_item = self.per_item or 0.0
        return MAX_CHUNK if per_item <= 0 else int(min(MAX_CHUNK, max(1.0, seconds / per_item)))
