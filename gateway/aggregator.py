"""Series registry, type ownership, gauges and the lifecycle of windows (CONTRACT 3 and 4).

A state machine with explicit time: ``add(batch, now)`` folds a parsed batch into the open
windows, ``close(now)`` returns a snapshot for every window whose grace has passed.  Windows
are aligned to the wall clock, ``[k*W, (k+1)*W)``; a window closes ``grace`` seconds after
its end, and the next window is already collecting by then.

Every series has a dense index into numpy columns.  The series keeps the type of its first
sample while it is live (it has samples in an open window, or it is a held gauge); samples of
another type are conflicts and leave no state.  Gauges keep a running value across windows
and are reported, held, until they have not been updated for ``gauge_ttl`` seconds
(``gateway.gauges`` keeps their columns).

No I/O, no clock reads, no logging.  numpy: yes, as ``gateway.window`` and ``gateway.gauges``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gateway.gauges import Gauges
from gateway.parser import NO_TIMESTAMP, ParsedBatch
from gateway.protocol import Kind, Op
from gateway.series_index import SeriesIndex, keys_at
from gateway.slot_map import SlotMap
from gateway.window import Floats, Indices, SetMembers, Window, WindowSnapshot
from gateway.window_state import AggregatorState

_NONE = -1
EVICT_SLICE = 4096
"""Idle series the gateway evicts at a time (about 3 ms), between intake's turns."""


@dataclass(slots=True)
class AddResult:
    """What ``add`` did with a batch, for the health counters."""

    samples: dict[Kind, int] = field(default_factory=dict)
    late: int = 0
    conflicts: int = 0
    over_budget: int = 0
    """Samples of new series refused because ``max_series`` series are in use."""
    new_series: int = 0


class Aggregator:
    def __init__(
        self,
        *,
        window: int,
        grace: float,
        gauge_ttl: float,
        now: float,
        max_series: int | None = None,
        evict_at_close: int | None = None,
    ) -> None:
        """``evict_at_close``: idle series evicted by ``close`` itself, at most (None: all);
        the rest wait for ``evict_idle``."""
        if window < 1 or grace < 0:
            raise ValueError("window must be at least 1 s and grace at least 0")
        self.length = window
        self.grace = grace
        self.gauge_ttl = gauge_ttl
        self._series = SeriesIndex(max_series)
        self._capacity = 1024
        self._in_use = np.zeros(self._capacity, dtype=bool)
        self._kind = np.full(self._capacity, _NONE, dtype=np.int8)
        self._gauges = Gauges(self._capacity, gauge_ttl)
        self._windows: dict[int, Window] = {}
        self._slot_map = SlotMap(self._capacity)
        self._next_close = self.window_start(now)
        self._idle_before = self._next_close  # windows before this one with no samples: skip
        self._evict_at_close = evict_at_close
        self._idle: Indices = np.zeros(0, dtype=np.intp)  # slots waiting for eviction

    # --- time ------------------------------------------------------------------------------

    def window_start(self, t: float) -> int:
        return math.floor(t / self.length) * self.length

    @property
    def open_from(self) -> int:
        """The start of the oldest window not yet closed: every earlier one has been returned
        by ``close`` (or had nothing to report)."""
        return self._next_close

    def next_close_time(self) -> float:
        """When the oldest window that is not yet closed may be closed."""
        return self._next_close + self.length + self.grace

    @property
    def series(self) -> int:
        """Series holding a slot: live, or idle and not evicted yet (``evict_idle``)."""
        return len(self._series)

    @property
    def slots(self) -> int:
        """Rows allocated in the columns: the high-water mark of series held at once."""
        return self._series.slots

    @property
    def live_series(self) -> int:
        return int(np.count_nonzero(self._kind[: self._series.slots] != _NONE))

    def take_tallies(self) -> tuple[Counter[str], Counter[str]]:
        """New series and refused samples by metric prefix since the last call."""
        return self._series.take_tallies()

    # --- intake ----------------------------------------------------------------------------

    def add(self, batch: ParsedBatch, now: float) -> AddResult:
        result = AddResult()
        n = len(batch.key_ids)
        if n == 0:
            return result
        idx = self._indices(batch, result)
        refused = idx == _NONE
        result.over_budget = int(np.count_nonzero(refused))
        idx[refused] = 0  # never used: those samples are not kept
        ops = batch.ops
        values: Floats = batch.values
        weights: Floats = batch.weights
        starts, placed = self._place(batch.timestamps, n, now)
        result.late = int(np.count_nonzero(~placed & ~refused))
        keep = placed & ~refused

        kinds = np.where(ops == Op.GAUGE_DELTA, np.int8(Kind.GAUGE), ops)
        self._claim_types(idx[keep], kinds[keep])
        keep &= self._kind[idx] == kinds
        result.conflicts = n - result.over_budget - result.late - int(np.count_nonzero(keep))

        is_set = ops == Op.SET
        members = batch.members
        if not keep.all():
            members = [m for m, k in zip(members, keep[is_set].tolist(), strict=True) if k]
            idx, ops, kinds, starts = idx[keep], ops[keep], kinds[keep], starts[keep]
            values, weights, is_set = values[keep], weights[keep], is_set[keep]
        counts = np.bincount(kinds, minlength=len(Kind))
        result.samples = {kind: int(counts[kind]) for kind in Kind if counts[kind]}

        is_gauge = kinds == Kind.GAUGE
        if is_gauge.any():
            values = values.copy()
            values[is_gauge] = self._gauges.run(idx[is_gauge], values[is_gauge], ops[is_gauge])
            weights = np.where(is_gauge, 1.0, weights)  # gauges ignore the sample rate
        for start in np.unique(starts).tolist():
            window = self._window(start)
            here = starts == start
            numeric = here & ~is_set
            if numeric.any():
                window.add(idx[numeric], values[numeric], weights[numeric], now)
            sets = here & is_set
            if sets.any():
                picked = members
                if not here.all():
                    in_window = here[is_set].tolist()
                    picked = [m for m, h in zip(members, in_window, strict=True) if h]
                window.add_members(idx[sets].tolist(), picked)
        return result

    def _indices(self, batch: ParsedBatch, result: AddResult) -> Indices:
        """The slot of each sample's series; ``_NONE`` for a new series over the budget.

        Key ids map to slots through ``SlotMap``; only ids not yet mapped take a dict
        lookup, once per batch each, in the order their first samples arrived (which
        decides who gets the last free slots under ``max_series``).  When they might not
        all fit, idle series still waiting for ``evict_idle`` are evicted first, before
        any lookup: a series of this batch among them then simply comes back as new.
        """
        ids = batch.key_ids
        idx = self._slot_map.slots(batch.key_table, ids)
        missing = idx == _NONE
        if not missing.any():
            return idx
        series = self._series
        unmapped, first, samples = np.unique(ids[missing], return_index=True, return_counts=True)
        if len(self._idle) and not series.has_room(len(unmapped)):
            self.evict_idle()
            idx = self._slot_map.slots(batch.key_table, ids)
            missing = idx == _NONE
            unmapped, first, samples = np.unique(
                ids[missing], return_index=True, return_counts=True
            )
        arrival = np.argsort(first)
        for key_id, count in zip(
            unmapped[arrival].tolist(), samples[arrival].tolist(), strict=True
        ):
            key = batch.key_table[key_id]
            found = series.get(key)
            if found is None:
                found = series.register(key, samples=count)
                if found is None:
                    continue
                result.new_series += 1
                if found >= self._capacity:
                    self._grow(self._capacity * 2)
                self._in_use[found] = True
            self._slot_map.bind(key_id, found)
        return self._slot_map.slots(batch.key_table, ids)

    def _grow(self, capacity: int) -> None:
        extra = capacity - self._capacity
        self._in_use = np.concatenate([self._in_use, np.zeros(extra, dtype=bool)])
        self._slot_map.grow(capacity)
        self._kind = np.concatenate([self._kind, np.full(extra, _NONE, dtype=np.int8)])
        self._gauges.grow(capacity)
        for window in self._windows.values():
            window.grow(capacity)
        self._capacity = capacity

    def _place(
        self, timestamps: npt.NDArray[np.int64], n: int, now: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """The window start of each sample, and which samples are not late (CONTRACT 3).

        A ``|T`` sample joins its own window while that window is still open (not closed,
        and its grace not yet over); an older one is late; a future one joins the current.
        """
        current = self.window_start(now)
        starts = np.full(n, current, dtype=np.int64)
        keep = np.ones(n, dtype=bool)
        stamped = timestamps != NO_TIMESTAMP
        if stamped.any():
            own = (timestamps // self.length) * self.length
            past = stamped & (own < current)
            still_open = (own >= self._next_close) & (own + self.length + self.grace > now)
            starts[past & still_open] = own[past & still_open]
            keep = ~(past & ~still_open)
        return starts, keep

    def _claim_types(self, idx: Indices, kinds: npt.NDArray[np.int8]) -> None:
        """A series without a type takes the type of its first sample in this batch."""
        free = self._kind[idx] == _NONE
        if free.any():
            series, first = np.unique(idx[free], return_index=True)
            self._kind[series] = kinds[free][first]

    def _window(self, start: int) -> Window:
        window = self._windows.get(start)
        if window is None:
            window = self._windows[start] = Window(start, self._capacity)
        return window

    # --- closing ---------------------------------------------------------------------------

    def close(self, now: float) -> list[WindowSnapshot]:
        """Close every window whose end plus grace is at or before ``now``, oldest first."""
        closed = []
        while self.next_close_time() <= now:
            if not self._windows and not self._gauges.live.any():
                # Nothing open and nothing held: the idle windows in between report nothing.
                self._next_close = max(self._next_close, self.window_start(now - self.grace))
                continue
            if self._next_close < self._idle_before and self._next_close not in self._windows:
                self._next_close += self.length  # no gateway ran then (a restart's gap)
                continue
            closed.append(self._close_one(self._next_close))
            self._next_close += self.length
        return closed

    def close_all(self, now: float) -> list[WindowSnapshot]:
        """Close every window up to and including the open one (shutdown, CONTRACT 7)."""
        last = max(self.window_start(now), max(self._windows, default=self._next_close))
        closed = []
        while self._next_close <= last:
            closed.append(self._close_one(self._next_close))
            self._next_close += self.length
        return closed

    def _close_one(self, start: int) -> WindowSnapshot:
        n = self._series.slots
        window = self._windows.pop(start, None) or Window(start, self._capacity)
        kinds = self._kind[:n]
        touched = window.touched[:n]
        slots = np.flatnonzero(touched)

        is_gauge = kinds == Kind.GAUGE
        held = self._gauges.held(start, touched, is_gauge)
        # Kinds and keys change as series go idle below: the snapshot takes copies of those.
        keys = self._series.export()
        snapshot = WindowSnapshot(
            start=start,
            slots=slots,
            by_slot=window.by_slot(keys, kinds.copy(), n),
            members=SetMembers(window.pairs, slots),
            held_keys=keys_at(keys, held.tolist()),
            held_values=self._gauges.closed_value[held],
        )

        self._gauges.close(start, np.flatnonzero(touched & is_gauge), window.last)
        self._release(start, n, touched, is_gauge)
        return snapshot

    def _release(
        self, start: int, n: int, touched: npt.NDArray[np.bool_], is_gauge: npt.NDArray[np.bool_]
    ) -> None:
        """Free the type of series that stopped being live when window ``start`` closed."""
        still_open = np.zeros(n, dtype=bool)
        for window in self._windows.values():
            still_open |= window.touched[:n]
        # Expire with the last window that holds the gauge: the next one would not report it.
        gone = self._gauges.expire(start + self.length, is_gauge, still_open)
        free = (touched & ~is_gauge & ~still_open) | gone
        self._kind[:n][free] = _NONE
        # Series with no type any more and no samples in an open window are idle: their slots
        # go back to the index (a series seen again simply gets a slot again).  Every idle
        # slot is found again here, so this replaces what was still waiting.
        self._idle = np.flatnonzero(self._in_use[:n] & (self._kind[:n] == _NONE) & ~still_open)
        self.evict_idle(self._evict_at_close)

    def evict_idle(self, limit: int | None = None) -> bool:
        """Evict up to ``limit`` (None: all) of the series found idle at the last close;
        returns whether some are still waiting.

        Evicting is about 0.7 µs a series in Python: three quarters of a million series
        that went quiet at once (a rollout that renames every pod) held the event loop for
        0.5 s at the close, so the gateway evicts a slice at a time between intake's turns.
        A series that had a sample since the close is live again, and stays.
        """
        if limit is None or limit >= len(self._idle):
            slots, self._idle = self._idle, self._idle[:0]
        else:
            slots, self._idle = self._idle[:limit], self._idle[limit:]
        # A series has a type again once a sample of it was taken since the close.
        slots = slots[self._in_use[slots] & (self._kind[slots] == _NONE)]
        if len(slots):
            self._series.evict(slots.tolist())
            self._slot_map.release(slots)
            self._in_use[slots] = False
            self._gauges.forget(slots)
        return len(self._idle) > 0

    # --- restart (CONTRACT 6: the open window survives with --spool-dir) -----------------

    def export_state(self) -> AggregatorState:
        """Everything that is not yet reported: open windows, series, types and gauges."""
        n = self._series.slots
        windows = {
            start: (
                np.stack([w.sum[:n], w.count[:n], w.min[:n], w.max[:n], w.last[:n]]),
                w.touched[:n].copy(),
                {i: sorted(members) for i, members in w.sets.items()},
            )
            for start, w in self._windows.items()
        }
        gauges, gauge_live, gauge_closed_start = self._gauges.export(n)
        return AggregatorState(
            length=self.length,
            next_close=self._next_close,
            keys=self._series.export(),
            kinds=self._kind[:n].copy(),
            gauges=gauges,
            gauge_live=gauge_live,
            gauge_closed_start=gauge_closed_start,
            windows=windows,
        )

    def restore_state(self, state: AggregatorState, now: float) -> None:
        """Take over a saved state; windows whose grace has passed close at the next close().

        Windows between the saved ones and ``now`` had no gateway running: they are skipped
        rather than reported with held gauges.
        """
        if state.length != self.length:
            raise ValueError(f"saved windows are {state.length} s long, not {self.length} s")
        n = len(state.keys)
        self._series = SeriesIndex.restore(state.keys, self._series.max_series)
        capacity = max(1024, 1 << max(0, n - 1).bit_length())
        self._capacity = capacity
        self._in_use = np.zeros(capacity, dtype=bool)
        self._in_use[:n] = [key is not None for key in state.keys]
        self._slot_map.forget_all(capacity)  # slots changed: map parser ids afresh
        self._kind = np.full(capacity, _NONE, dtype=np.int8)
        self._kind[:n] = state.kinds
        self._gauges = Gauges.restore(
            capacity, self.gauge_ttl, state.gauges, state.gauge_live, state.gauge_closed_start
        )
        self._windows = {}
        # Series the saved run had not evicted yet wait again, so that they give way to new
        # series under --max-series before the next close finds them.
        self._idle = np.flatnonzero(self._in_use[:n] & (self._kind[:n] == _NONE))
        for start, (columns, touched, sets) in state.windows.items():
            window = Window(start, capacity)
            for column, values in zip(
                (window.sum, window.count, window.min, window.max, window.last),
                columns,
                strict=True,
            ):
                column[:n] = values
            window.touched[:n] = touched
            window.sets = {i: set(members) for i, members in sets.items()}
            self._windows[start] = window
        self._next_close = min(state.next_close, self._next_close)
        self._idle_before = self.window_start(now)
