"""Parser key ids to the aggregator's slots, both ways, for one parser key table at a time.

The parser hands series over as ids into its key table (``ParsedBatch.key_table``); the
aggregator keeps series in slots (``gateway.series_index``).  This map turns a batch's ids
into slots with one array lookup.  It is kept while batches bring the same table object;
another table (a renumbered one, or another parser's) empties it.  A slot given back by an
evicted series is unmapped, so an id never points at a slot another series took since.

No I/O, no clock, no logging; numpy, as the aggregator it serves.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from gateway.protocol import SeriesKey

NONE = -1
Slots = npt.NDArray[np.intp]


class SlotMap:
    def __init__(self, slots: int) -> None:
        self._table: list[SeriesKey] | None = None
        self._slot_of_id: Slots = np.full(1024, NONE, dtype=np.intp)
        self._id_of_slot: Slots = np.full(slots, NONE, dtype=np.intp)

    def slots(self, table: list[SeriesKey], ids: Slots) -> Slots:
        """The slot of each id (``NONE`` where not mapped yet), for ids of ``table``."""
        if table is not self._table:
            self.forget_all()
            self._table = table
        top = int(ids.max())
        if top >= len(self._slot_of_id):
            size = max(top + 1, 2 * len(self._slot_of_id))
            self._slot_of_id = _grown(self._slot_of_id, size)
        return self._slot_of_id[ids]

    def bind(self, key_id: int, slot: int) -> None:
        self._slot_of_id[key_id] = slot
        self._id_of_slot[slot] = key_id

    def release(self, slots: Slots) -> None:
        """Unmap slots given back by evicted series."""
        ids = self._id_of_slot[slots]
        self._slot_of_id[ids[ids != NONE]] = NONE
        self._id_of_slot[slots] = NONE

    def forget_all(self, slots: int | None = None) -> None:
        """Unmap everything (slots changed wholesale, or another key table); ``slots`` also
        resizes the slot side."""
        self._table = None
        self._slot_of_id = np.full(1024, NONE, dtype=np.intp)
        size = len(self._id_of_slot) if slots is None else slots
        self._id_of_slot = np.full(size, NONE, dtype=np.intp)

    def grow(self, slots: int) -> None:
        self._id_of_slot = _grown(self._id_of_slot, slots)


def _grown(column: Slots, size: int) -> Slots:
    return np.concatenate([column, np.full(size - len(column), NONE, dtype=np.intp)])
