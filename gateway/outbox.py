"""The backlog of request bodies waiting to be delivered, and the pacing of their sending.

``Outbox`` keeps bodies oldest first and bounds them (CONTRACT 6): past
``max_points`` pending points the oldest bodies are dropped, and a body whose points are
older than ``max_age`` seconds is dropped, since the API refuses them.  Dropped bodies are
returned to the caller, which counts them with their reason and removes their spool files.

``TokenBucket`` paces requests to ``--max-requests-per-minute``.  After a 429 its rate is
cut in half (down to a sixteenth) and recovers by a tenth with every success, so a fleet
of gateways that shares one account quota backs off together and comes back gradually.

Pure: no I/O, no asyncio, no clock reads (time is passed in).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gateway.batches import Body

if TYPE_CHECKING:
    from gateway.spool import SpoolEntry


class Drop(enum.StrEnum):
    """Why pending points were dropped; the ``reason`` label of ``points_dropped_total``."""

    BACKLOG_FULL = "backlog_full"
    TOO_OLD = "too_old"


@dataclass(slots=True, eq=False)
class Pending:
    """One body waiting for delivery; compared by identity (two bodies may be equal)."""

    body: Body
    timestamp: int
    """The window start of its points (every point of a body shares it)."""
    ready_at: float = 0.0
    """Monotonic time before which it is not sent (the per-process send jitter)."""
    spooled: SpoolEntry | None = None
    """Its spool entry once it has been written to disk."""


class Outbox:
    def __init__(self, *, max_points: int, max_age: float) -> None:
        self._items: deque[Pending] = deque()
        self._max_points = max_points
        self._max_age = max_age
        self.points = 0
        self.in_flight: Pending | None = None
        """The body being sent: never dropped under it, so it is counted once."""

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Pending]:
        return iter(self._items)

    def __contains__(self, item: object) -> bool:
        return any(pending is item for pending in self._items)

    def add(self, item: Pending) -> list[Pending]:
        """Queue ``item`` behind the others; returns the oldest bodies dropped to make room."""
        self._items.append(item)
        self.points += item.body.points
        dropped = []
        while self.points > self._max_points:
            victim = next(
                (i for i in self._items if i is not self.in_flight and i is not item), None
            )
            if victim is None:
                break
            self.remove(victim)
            dropped.append(victim)
        return dropped

    def expire(self, now: float) -> list[Pending]:
        """Drop bodies whose points are older than ``max_age`` at wall-clock time ``now``.

        Bodies are queued oldest first (spooled ones at start, then each window as it
        closes), so only the front is looked at: this runs before every attempt, and a
        scan of the whole backlog each time cost O(n^2) in the event loop.  A body queued
        out of order (saved windows of another --window length) is caught when it reaches
        the front, before it is sent.
        """
        limit = now - self._max_age
        stale = []
        while self._items and self._items[0].timestamp < limit:
            if self._items[0] is self.in_flight:
                break
            stale.append(self._items.popleft())
            self.points -= stale[-1].body.points
        return stale

    def clear(self) -> None:
        self._items.clear()
        self.points = 0

    def first(self) -> Pending | None:
        return self._items[0] if self._items else None

    def remove(self, item: Pending) -> bool:
        """Take ``item`` out; False when it was no longer there."""
        try:
            self._items.remove(item)
        except ValueError:
            return False
        self.points -= item.body.points
        return True

    def oldest_timestamp(self) -> int | None:
        """The front body's window start: the oldest, as bodies are queued oldest first."""
        return self._items[0].timestamp if self._items else None


class TokenBucket:
    """At most ``per_minute`` requests a minute, with a burst of one second's worth."""

    MIN_FACTOR = 1 / 16

    def __init__(self, per_minute: float, now: float) -> None:
        self._rate = per_minute / 60.0
        self._factor = 1.0
        self._capacity = max(1.0, self._rate)
        self._tokens = self._capacity
        self._updated = now

    @property
    def factor(self) -> float:
        """The share of the configured rate in force (below 1 after 429s)."""
        return self._factor

    def delay(self, now: float) -> float:
        """Seconds to wait before a request may go; 0 when a token is there now."""
        self._refill(now)
        if self._tokens >= 1.0:
            return 0.0
        return (1.0 - self._tokens) / (self._rate * self._factor)

    def take(self, now: float) -> None:
        self._refill(now)
        self._tokens -= 1.0

    def throttled(self) -> None:
        """A 429: halve the rate in force."""
        self._factor = max(self.MIN_FACTOR, self._factor / 2)

    def succeeded(self) -> None:
        self._factor = min(1.0, self._factor * 1.1)

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        rate = self._rate * self._factor
        # The burst shrinks with the rate: after 429s, no full second's worth at once.
        self._tokens = min(max(1.0, self._capacity * self._factor), self._tokens + elapsed * rate)
