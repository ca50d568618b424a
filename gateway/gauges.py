"""Gauges across windows (CONTRACT 4): the running value that ``+``/``-`` samples adjust,
and the value a gauge is held at in the windows after its last sample, until ``gauge_ttl``.

Columns by slot, the aggregator's dense series index; the aggregator decides which slots
are gauges.  Pure: no I/O, no clock, no logging.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.protocol import Op

Floats = npt.NDArray[np.float64]
Indices = npt.NDArray[np.intp]
Mask = npt.NDArray[np.bool_]

NEVER = -1
"""``closed_start`` of a gauge no closed window updated (or whose hold expired)."""


class Gauges:
    """Per slot: the running value and whether it is set (``live``), and the value as of the
    end of the last closed window that updated the gauge, with that window's start."""

    __slots__ = ("closed_start", "closed_value", "live", "ttl", "value")

    def __init__(self, capacity: int, ttl: float) -> None:
        self.ttl = ttl
        self.value: Floats = np.zeros(capacity)
        self.live = np.zeros(capacity, dtype=bool)
        self.closed_value: Floats = np.zeros(capacity)
        self.closed_start = np.full(capacity, NEVER, dtype=np.int64)

    def grow(self, capacity: int) -> None:
        extra = capacity - len(self.value)
        self.value = np.concatenate([self.value, np.zeros(extra)])
        self.live = np.concatenate([self.live, np.zeros(extra, dtype=bool)])
        self.closed_value = np.concatenate([self.closed_value, np.zeros(extra)])
        self.closed_start = np.concatenate(
            [self.closed_start, np.full(extra, NEVER, dtype=np.int64)]
        )

    def run(self, idx: Indices, values: Floats, ops: npt.NDArray[np.int8]) -> Floats:
        """Each gauge sample's resulting value, in arrival order, updating running values."""
        deltas = ops == Op.GAUGE_DELTA
        if deltas.any():
            running: dict[int, float] = {}
            held, live = self.value, self.live
            out = values.copy()
            for j, (i, value, delta) in enumerate(
                zip(idx.tolist(), values.tolist(), deltas.tolist(), strict=True)
            ):
                if delta:
                    base = running.get(i)
                    if base is None:
                        base = float(held[i]) if live[i] else 0.0
                    value += base
                running[i] = value
                out[j] = value
            values = out
        series, first = np.unique(idx[::-1], return_index=True)
        self.value[series] = values[::-1][first]
        self.live[series] = True
        return values

    def held(self, start: int, touched: Mask, is_gauge: Mask) -> Indices:
        """The gauges window ``start`` holds: updated by an earlier closed window less than
        ``ttl`` before, and without a sample in this one (masks over the first n slots)."""
        closed_start = self.closed_start[: len(touched)]
        recent = (closed_start != NEVER) & (start - closed_start < self.ttl)
        return np.flatnonzero(recent & ~touched & is_gauge)

    def close(self, start: int, updated: Indices, last: Floats) -> None:
        """Window ``start`` closed with samples of the gauges at ``updated``."""
        self.closed_value[updated] = last[updated]
        self.closed_start[updated] = start

    def expire(self, next_start: int, is_gauge: Mask, still_open: Mask) -> Mask:
        """Stop holding gauges the window ``next_start`` would no longer report, and forget
        those of them without samples in an open window; returns those (first n slots)."""
        n = len(is_gauge)
        closed_start = self.closed_start[:n]
        expired = is_gauge & (closed_start != NEVER) & (next_start - closed_start >= self.ttl)
        closed_start[expired] = NEVER
        gone: Mask = expired & ~still_open
        self.live[:n][gone] = False
        self.value[:n][gone] = 0.0
        return gone

    def forget(self, slots: Indices) -> None:
        """The series at ``slots`` were evicted: their slots start afresh."""
        self.live[slots] = False
        self.value[slots] = 0.0
        self.closed_start[slots] = NEVER

    def export(self, n: int) -> tuple[Floats, Mask, npt.NDArray[np.int64]]:
        """(running and closed values stacked, live, closed_start) of the first n slots."""
        values = np.stack([self.value[:n], self.closed_value[:n]])
        return values, self.live[:n].copy(), self.closed_start[:n].copy()

    @classmethod
    def restore(
        cls,
        capacity: int,
        ttl: float,
        values: Floats,
        live: Mask,
        closed_start: npt.NDArray[np.int64],
    ) -> Gauges:
        """Gauges from ``export``'s figures, in columns of ``capacity`` slots."""
        gauges = cls(capacity, ttl)
        n = len(live)
        gauges.value[:n] = values[0]
        gauges.closed_value[:n] = values[1]
        gauges.live[:n] = live
        gauges.closed_start[:n] = closed_start
        return gauges
