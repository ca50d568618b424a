"""One window's accumulators, and the snapshot a closed window leaves behind.

A window keeps one slot per series (the aggregator's dense index) in numpy columns:
weighted sum and count, raw min, max and last value, when the last value arrived, whether
the series was touched, and the distinct members of set series.  Closing a window hands its
columns to a ``WindowSnapshot``; nothing writes to them afterwards, so the snapshot can be
turned into points while ingestion goes on into fresh columns.

Only this module and ``gateway.aggregator`` import numpy; ``WindowSnapshot.rows`` yields
plain Python numbers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.protocol import Kind, SeriesKey

Floats = npt.NDArray[np.float64]
Indices = npt.NDArray[np.intp]

_KINDS = tuple(Kind)
ROWS_AT_ONCE = 4096
"""Rows ``WindowSnapshot.rows`` turns into Python numbers at a time."""

Stats = tuple[float, float | None, float, float, float, float]
"""(avg, sum, last, max, min, count); ``sum`` is None for gauges, whose points carry no sum."""


class Window:
    """Columns for the samples of one window ``[start, start + length)``."""

    __slots__ = ("count", "last", "last_at", "max", "min", "pairs", "start", "sum", "touched")

    def __init__(self, start: int, capacity: int) -> None:
        self.start = start
        self.sum: Floats = np.zeros(capacity)
        self.count: Floats = np.zeros(capacity)
        self.min: Floats = np.full(capacity, np.inf)
        self.max: Floats = np.full(capacity, -np.inf)
        self.last: Floats = np.zeros(capacity)
        self.last_at: Floats = np.zeros(capacity)
        self.touched = np.zeros(capacity, dtype=bool)
        # (slot, member) of every set sample: one C-level update a batch, however often a
        # member repeats; grouped by series only when the window closes.
        self.pairs: set[tuple[int, bytes]] = set()

    def grow(self, capacity: int) -> None:
        extra = capacity - len(self.sum)
        if extra <= 0:
            return
        self.sum = np.concatenate([self.sum, np.zeros(extra)])
        self.count = np.concatenate([self.count, np.zeros(extra)])
        self.min = np.concatenate([self.min, np.full(extra, np.inf)])
        self.max = np.concatenate([self.max, np.full(extra, -np.inf)])
        self.last = np.concatenate([self.last, np.zeros(extra)])
        self.last_at = np.concatenate([self.last_at, np.zeros(extra)])
        self.touched = np.concatenate([self.touched, np.zeros(extra, dtype=bool)])

    def add(self, idx: Indices, values: Floats, weights: Floats, arrived_at: float) -> None:
        """Fold samples in arrival order: ``sum += w*v``, ``count += w``, raw min/max/last.

        ``arrived_at`` is the batch's arrival time: it orders the last values of workers
        that each saw part of a series (``gateway.merge``).
        """
        np.add.at(self.sum, idx, weights * values)
        np.add.at(self.count, idx, weights)
        np.minimum.at(self.min, idx, values)
        np.maximum.at(self.max, idx, values)
        # The last sample of each series: the first occurrence in the reversed order.
        series, first = np.unique(idx[::-1], return_index=True)
        self.last[series] = values[::-1][first]
        self.last_at[series] = arrived_at
        self.touched[idx] = True

    def add_members(self, idx: list[int], members: list[bytes]) -> None:
        self.pairs.update(zip(idx, members, strict=True))
        self.touched[idx] = True

    @property
    def sets(self) -> dict[int, set[bytes]]:
        """The distinct members of each set series, by slot."""
        by_slot: dict[int, set[bytes]] = {}
        for slot, member in self.pairs:
            found = by_slot.get(slot)
            if found is None:
                by_slot[slot] = {member}
            else:
                found.add(member)
        return by_slot

    @sets.setter
    def sets(self, by_slot: dict[int, set[bytes]]) -> None:
        self.pairs = {(slot, member) for slot, members in by_slot.items() for member in members}


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """What one closed window reports: one row per series, as columns.

    ``held`` rows are gauges that were not updated in the window but are still live; they
    report their value as of the window's end with a count of 0.  ``last_at`` is when each
    row's last value arrived and ``members`` the members of each set row (by row position):
    what merging the windows of several workers needs (``gateway.merge``).
    """

    start: int
    keys: list[SeriesKey]
    kinds: npt.NDArray[np.int8]
    sum: Floats
    count: Floats
    min: Floats
    max: Floats
    last: Floats
    last_at: Floats
    distinct: npt.NDArray[np.int64]
    members: dict[int, set[bytes]]
    held_keys: list[SeriesKey]
    held_values: Floats

    def __len__(self) -> int:
        return len(self.keys) + len(self.held_keys)

    def rows(self) -> Iterator[tuple[SeriesKey, Kind, Stats]]:
        """Every row as (series key, kind, stats) with plain floats, per CONTRACT 4.

        Columns become Python floats ``ROWS_AT_ONCE`` rows at a time: all at once, a
        million-series window would hold seven lists of a million floats (about 220 bytes
        a series) on top of its arrays while it is encoded.
        """
        for first in range(0, len(self.keys), ROWS_AT_ONCE):
            part = slice(first, first + ROWS_AT_ONCE)
            columns = zip(
                self.keys[part],
                self.kinds[part].tolist(),
                self.sum[part].tolist(),
                self.count[part].tolist(),
                self.min[part].tolist(),
                self.max[part].tolist(),
                self.last[part].tolist(),
                self.distinct[part].tolist(),
                strict=True,
            )
            for key, kind, total, count, low, high, last, distinct in columns:
                if kind == Kind.SET:
                    n = float(distinct)
                    yield key, Kind.SET, (n, n, n, n, n, n)
                elif kind == Kind.GAUGE:
                    yield key, Kind.GAUGE, (total / count, None, last, high, low, count)
                else:
                    yield key, _KINDS[kind], (total / count, total, last, high, low, count)
        for key, value in zip(self.held_keys, self.held_values.tolist(), strict=True):
            yield key, Kind.GAUGE, (value, None, value, value, value, 0.0)
