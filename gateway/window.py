"""One window's accumulators, and the snapshot a closed window leaves behind.

A window keeps one slot per series (the aggregator's dense index) in numpy columns:
weighted sum and count, raw min, max and last value, when the last value arrived, whether
the series was touched, and the distinct members of set series.  Closing a window hands its
columns, by slot, to a ``WindowSnapshot``; nothing writes to them afterwards, so the snapshot
can be turned into points, a slice of rows at a time, while ingestion goes on into fresh
columns.

numpy: yes, as ``gateway.aggregator``; ``WindowSnapshot.rows`` yields plain Python numbers.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from gateway.protocol import Kind, SeriesKey
from gateway.series_index import keys_at

Floats = npt.NDArray[np.float64]
Indices = npt.NDArray[np.intp]

_KINDS = tuple(Kind)
ROWS_AT_ONCE = 4096
"""Rows ``WindowSnapshot.columns`` hands over at a time, unless asked for another size."""

STATS = ("avg", "sum", "last", "max", "min", "count")
"""The statistics of a row, in the order of ``Stats`` and of ``StatColumns.values``."""

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

    def by_slot(
        self, keys: Sequence[SeriesKey | None], kinds: npt.NDArray[np.int8], n: int
    ) -> SlotColumns:
        """The columns of this window, closed (nothing writes to them any more), for the
        first ``n`` slots; ``keys`` and ``kinds`` by slot as of the close."""
        distinct = np.zeros(n, dtype=np.int64)
        if self.pairs:  # members per set row: only counted here (see SetMembers)
            paired = map(operator.itemgetter(0), self.pairs)
            in_slot = np.fromiter(paired, dtype=np.intp, count=len(self.pairs))
            distinct = np.bincount(in_slot, minlength=n)
        return SlotColumns(
            keys, kinds, self.sum, self.count, self.min, self.max, self.last, self.last_at, distinct
        )

    @property
    def sets(self) -> dict[int, set[bytes]]:
        """The distinct members of each set series, by slot."""
        return group_pairs(self.pairs)

    @sets.setter
    def sets(self, by_slot: dict[int, set[bytes]]) -> None:
        self.pairs = {(slot, member) for slot, members in by_slot.items() for member in members}


def group_pairs(pairs: Iterable[tuple[int, bytes]]) -> dict[int, set[bytes]]:
    """(slot, member) pairs grouped by slot."""
    by_slot: dict[int, set[bytes]] = {}
    for slot, member in pairs:
        found = by_slot.get(slot)
        if found is None:
            by_slot[slot] = {member}
        else:
            found.add(member)
    return by_slot


class SetMembers(Mapping[int, set[bytes]]):
    """The members of a snapshot's set rows, by row position, grouped when first read.

    A closed window's (slot, member) pairs are kept as they are: reporting needs only each
    row's count (``WindowSnapshot.distinct``), and grouping a million pairs would hold the
    event loop for half a second at every close.  Merging the windows of several workers
    reads the members, and groups them then, in the parent.
    """

    __slots__ = ("_grouped", "_pairs", "_rows")

    def __init__(self, pairs: set[tuple[int, bytes]], rows: Indices) -> None:
        """``rows``: the slot of each row, ascending (as ``np.flatnonzero`` gives them)."""
        self._pairs: set[tuple[int, bytes]] | None = pairs
        self._rows = rows
        self._grouped: dict[int, set[bytes]] | None = None

    def _groups(self) -> dict[int, set[bytes]]:
        if self._grouped is None:
            assert self._pairs is not None
            by_slot = group_pairs(self._pairs)
            slots = np.fromiter(by_slot, dtype=np.intp, count=len(by_slot))
            rows = np.searchsorted(self._rows, slots).tolist()
            self._grouped = dict(zip(rows, by_slot.values(), strict=True))
            self._pairs = None
        return self._grouped

    def __getitem__(self, row: int) -> set[bytes]:
        return self._groups()[row]

    def __iter__(self) -> Iterator[int]:
        return iter(self._groups())

    def __len__(self) -> int:
        return len(self._groups())


@dataclass(frozen=True, slots=True)
class SlotColumns:
    """A closed window's statistics by slot (the aggregator's dense series index).

    The aggregator hands over the closed window's own columns and a copy of its key table,
    and gathers nothing at the close: a million rows gathered at once held the event loop
    for about 0.4 s.  ``WindowSnapshot.columns`` gathers a slice of rows at a time instead.
    """

    keys: Sequence[SeriesKey | None]
    """The series of each slot as of the close (None: a free slot)."""
    kinds: npt.NDArray[np.int8]
    sum: Floats
    count: Floats
    min: Floats
    max: Floats
    last: Floats
    last_at: Floats
    distinct: npt.NDArray[np.int64]

    def keys_at(self, slots: Indices) -> list[SeriesKey]:
        return keys_at(self.keys, slots.tolist())


@dataclass(frozen=True, slots=True)
class WindowSnapshot:
    """What one closed window reports: a row for each slot in ``slots``, then held rows.

    ``held`` rows are gauges that were not updated in the window but are still live; they
    report their value as of the window's end with a count of 0.  ``last_at`` is when each
    row's last value arrived and ``members`` the members of each set row (by row position):
    what merging the windows of several workers needs (``gateway.merge``).

    The row properties (``keys``, ``sum``, ...) gather every row when read; reporting reads
    ``columns`` instead, a slice at a time.  A pickled snapshot (a worker's, sent to the
    parent) carries its rows only, not the slot columns.
    """

    start: int
    slots: Indices
    """The slot of each row that was touched in the window, ascending."""
    by_slot: SlotColumns
    members: Mapping[int, set[bytes]]
    held_keys: list[SeriesKey]
    held_values: Floats

    @classmethod
    def of_rows(
        cls,
        start: int,
        keys: list[SeriesKey],
        kinds: npt.NDArray[np.int8],
        sum: Floats,
        count: Floats,
        min: Floats,
        max: Floats,
        last: Floats,
        last_at: Floats,
        distinct: npt.NDArray[np.int64],
        members: Mapping[int, set[bytes]],
        held_keys: list[SeriesKey],
        held_values: Floats,
    ) -> WindowSnapshot:
        """A snapshot from columns that hold one entry per row (slot i is row i)."""
        by_slot = SlotColumns(keys, kinds, sum, count, min, max, last, last_at, distinct)
        return cls(start, np.arange(len(keys)), by_slot, members, held_keys, held_values)

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (
            WindowSnapshot.of_rows,
            (
                self.start,
                self.keys,
                self.kinds,
                self.sum,
                self.count,
                self.min,
                self.max,
                self.last,
                self.last_at,
                self.distinct,
                self.members,
                self.held_keys,
                self.held_values,
            ),
        )

    def __len__(self) -> int:
        return len(self.slots) + len(self.held_keys)

    @property
    def keys(self) -> list[SeriesKey]:
        return self.by_slot.keys_at(self.slots)

    @property
    def kinds(self) -> npt.NDArray[np.int8]:
        return self.by_slot.kinds[self.slots]

    @property
    def sum(self) -> Floats:
        return self.by_slot.sum[self.slots]

    @property
    def count(self) -> Floats:
        return self.by_slot.count[self.slots]

    @property
    def min(self) -> Floats:
        return self.by_slot.min[self.slots]

    @property
    def max(self) -> Floats:
        return self.by_slot.max[self.slots]

    @property
    def last(self) -> Floats:
        return self.by_slot.last[self.slots]

    @property
    def last_at(self) -> Floats:
        return self.by_slot.last_at[self.slots]

    @property
    def distinct(self) -> npt.NDArray[np.int64]:
        return self.by_slot.distinct[self.slots]

    def rows(self) -> Iterator[tuple[SeriesKey, Kind, Stats]]:
        """Every row as (series key, kind, stats) with plain floats, per CONTRACT 4."""
        for part in self.columns():
            yield from part.rows()

    def columns(self, size: int = ROWS_AT_ONCE) -> Iterator[StatColumns]:
        """The rows, ``size`` at a time, as stat columns: touched rows first, then held ones.

        In parts: all at once, a million-series window would hold another six columns of
        a million floats on top of its arrays while it is encoded.
        """
        table = self.by_slot
        for first in range(0, len(self.slots), size):
            slots = self.slots[first : first + size]
            kinds = table.kinds[slots]
            total, count = table.sum[slots], table.count[slots]
            gauge = kinds == Kind.GAUGE
            values = np.empty((len(STATS), len(kinds)))
            with np.errstate(invalid="ignore", divide="ignore"):  # sets have no count
                np.divide(total, count, out=values[0])
            values[1] = np.where(gauge, 0.0, total)
            values[2] = table.last[slots]
            values[3] = table.max[slots]
            values[4] = table.min[slots]
            values[5] = count
            is_set = kinds == Kind.SET
            if is_set.any():
                values[:, is_set] = table.distinct[slots][is_set]
            yield StatColumns(table.keys_at(slots), kinds, gauge, values)
        for first in range(0, len(self.held_keys), size):
            part = slice(first, first + size)
            held = self.held_values[part]
            none = np.zeros(len(held))
            yield StatColumns(
                self.held_keys[part],
                np.full(len(held), Kind.GAUGE, dtype=np.int8),
                np.ones(len(held), dtype=bool),
                np.stack([held, none, held, held, held, none]),
            )


@dataclass(frozen=True, slots=True)
class StatColumns:
    """Consecutive rows of a snapshot: ``values[i]`` is statistic ``STATS[i]`` of every row.

    A gauge (``gauge`` true) has no sum; its ``values[1]`` is 0 and not reported.  Sets
    report their distinct count for all six, and held gauges their value with a count of 0.
    """

    keys: list[SeriesKey]
    kinds: npt.NDArray[np.int8]
    gauge: npt.NDArray[np.bool_]
    values: Floats

    def rows(self, which: Iterable[int] | None = None) -> Iterator[tuple[SeriesKey, Kind, Stats]]:
        """Rows (all, or those at positions ``which``) as (series key, kind, stats)."""
        kinds = self.kinds.tolist()
        gauges = self.gauge.tolist()
        stats = list(zip(*self.values.tolist(), strict=True))
        for i in range(len(self.keys)) if which is None else which:
            avg, total, last, high, low, count = stats[i]
            yield (
                self.keys[i],
                _KINDS[kinds[i]],
                (avg, None if gauges[i] else total, last, high, low, count),
            )
