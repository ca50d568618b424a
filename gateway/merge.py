"""Merging the closed windows of several intake workers into one window (``--workers``).

Each worker aggregates the datagrams the kernel gives its socket; the same series may show
up in several workers' windows.  ``merge`` combines their rows exactly as one aggregator
would have combined the samples:

- sum and count add up, so averages are exact; min and max are the min and max;
- ``last`` is the value that arrived last, by arrival time (batches are stamped when their
  first datagram is read, so two workers within the same 10 ms are ordered arbitrarily);
- sets report the size of the union of the members;
- gauges: each worker keeps the running value its own samples set, and a ``+``/``-`` delta
  adjusts the value of the worker that received it.  The kernel picks a worker by the
  sender's address and port, so a sender's own deltas are exact; deltas to one gauge from
  several senders adjust different running values.  The merged gauge reports the last
  value by arrival time, and ``Merger`` holds it for windows without samples, as one
  process does, until ``gauge_ttl``;
- a series that workers saw with different types keeps the type with the most samples;
  the other rows are dropped and returned as conflicts.

Pure: no I/O, no clock, no asyncio.  Imports numpy (like ``gateway.window``).
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import numpy as np

from gateway.protocol import Kind, SeriesKey
from gateway.window import Floats, WindowSnapshot

_KINDS = len(Kind)


@dataclass(frozen=True, slots=True)
class Merged:
    snapshot: WindowSnapshot
    conflicts: int
    """Samples dropped because another worker saw the series with another type (for sets:
    distinct members)."""


def merge(start: int, parts: list[WindowSnapshot]) -> Merged:
    """One window from the touched rows of ``parts`` (their held rows are ignored)."""
    keys_in = list(itertools.chain.from_iterable(part.keys for part in parts))
    slot: dict[SeriesKey, int] = {}
    idx = np.fromiter(
        (slot.setdefault(key, len(slot)) for key in keys_in), dtype=np.intp, count=len(keys_in)
    )
    n = len(slot)

    def joined(column: str) -> Floats:
        return np.concatenate(
            [np.zeros(0), *(getattr(part, c) for part in parts for c in [column])]
        )

    kinds_in = np.concatenate([np.zeros(0, np.intp), *(part.kinds for part in parts)]).astype(
        np.intp
    )
    count_in, distinct_in = joined("count"), joined("distinct")
    weight = np.where(kinds_in == Kind.SET, distinct_in, count_in)

    # The type of each series: the one with the most samples (ties: the lowest Kind value).
    votes = np.zeros((n, _KINDS))
    np.add.at(votes, (idx, kinds_in), weight)
    kind = np.argmax(votes, axis=1)
    keep = kinds_in == kind[idx]
    conflicts = int(weight[~keep].sum())
    row_slot, idx = idx, idx[keep]

    total, count = np.zeros(n), np.zeros(n)
    np.add.at(total, idx, joined("sum")[keep])
    np.add.at(count, idx, count_in[keep])
    low, high = np.full(n, np.inf), np.full(n, -np.inf)
    np.minimum.at(low, idx, joined("min")[keep])
    np.maximum.at(high, idx, joined("max")[keep])

    # The last value: sort rows by arrival, then take each series' final row.
    arrival = joined("last_at")[keep]
    order = np.argsort(arrival, kind="stable")
    newest_first = order[::-1]
    series, from_end = np.unique(idx[newest_first], return_index=True)
    last, last_at = np.zeros(n), np.zeros(n)
    last[series] = joined("last")[keep][newest_first][from_end]
    last_at[series] = arrival[newest_first][from_end]

    members: dict[int, set[bytes]] = {}
    offset = 0
    kept, slots = keep.tolist(), row_slot.tolist()
    for part in parts:
        for row, found in part.members.items():
            if kept[offset + row]:
                members.setdefault(slots[offset + row], set()).update(found)
        offset += len(part.slots)
    distinct = np.zeros(n, dtype=np.int64)
    for i, found in members.items():
        distinct[i] = len(found)

    snapshot = WindowSnapshot.of_rows(
        start=start,
        keys=list(slot),
        kinds=kind.astype(np.int8),
        sum=total,
        count=count,
        min=low,
        max=high,
        last=last,
        last_at=last_at,
        distinct=distinct,
        members=members,
        held_keys=[],
        held_values=np.zeros(0),
    )
    return Merged(snapshot, conflicts)


class Merger:
    """Collects the workers' closed windows and hands out merged windows, oldest first.

    A window is merged once every worker has said it will send nothing more for it
    (``merge_before``).  Gauges are held here, across windows, the way one aggregator holds
    them: a gauge updated in window ``s`` reports its last value, with a count of 0, in the
    windows after ``s`` that have no sample of it, while ``start - s < gauge_ttl``.
    """

    def __init__(self, *, length: int, gauge_ttl: float, first_start: int) -> None:
        self.length = length
        self.gauge_ttl = gauge_ttl
        self._next = first_start
        self._parts: dict[int, list[WindowSnapshot]] = {}
        self._gauges: dict[SeriesKey, tuple[float, int]] = {}
        self._late = 0

    def add(self, part: WindowSnapshot) -> None:
        self._parts.setdefault(part.start, []).append(part)

    def last_start(self) -> int:
        """The latest window a worker sent, or the one before the next to merge."""
        return max(self._parts, default=self._next - self.length)

    @property
    def pending(self) -> int:
        """Windows received from some worker and not merged yet."""
        return len(self._parts)

    def merge_before(self, limit: int) -> list[Merged]:
        """Every window that starts before ``limit`` and has something to report."""
        out: list[Merged] = []
        while self._next < limit:
            start = self._next
            if not self._gauges:  # nothing held: jump to the next window that has parts
                start = min((s for s in self._parts if s >= start), default=limit)
                if start >= limit:
                    self._next = limit  # workers report window starts: aligned
                    break
            merged = self._merge_one(start)
            if len(merged.snapshot):  # a window with nothing to report is not reported
                out.append(merged)
            self._next = start + self.length
        for stale in [s for s in self._parts if s < self._next]:  # came after their merge
            for part in self._parts.pop(stale):
                self._late += int(part.count.sum()) + len(part.members)
        return out

    def take_late(self) -> int:
        """Samples (weighted; set members) of parts that came after their window was merged,
        since the last call.  The pool waits for every worker, so this stays 0 unless a
        worker's progress report was wrong."""
        late, self._late = self._late, 0
        return late

    def _merge_one(self, start: int) -> Merged:
        parts = self._parts.pop(start, [])
        merged = merge(start, parts)
        snapshot = merged.snapshot
        touched = set(snapshot.keys)
        # Every gauge still here was updated less than gauge_ttl before this window.
        held = [(key, value) for key, (value, _) in self._gauges.items() if key not in touched]
        for key, kind, value in zip(
            snapshot.keys, snapshot.kinds.tolist(), snapshot.last.tolist(), strict=True
        ):
            if kind == Kind.GAUGE:
                self._gauges[key] = (value, start)
        expired = start + self.length  # as of the next window: drop what it must not hold
        self._gauges = {
            key: entry for key, entry in self._gauges.items() if expired - entry[1] < self.gauge_ttl
        }
        snapshot = dataclasses.replace(
            snapshot,
            held_keys=[key for key, _ in held],
            held_values=np.array([value for _, value in held], dtype=np.float64),
        )
        return Merged(snapshot, merged.conflicts)
