"""Dense indices for series keys, the series budget (``--max-series``) and idle eviction.

Each live series owns one slot, the row of the aggregator's numpy columns.  A new series is
refused once ``max_series`` slots are in use, so a cardinality explosion (a request id or a
timestamp sent as a tag) costs counted samples, not the gateway's memory.  Series that went
idle are evicted when a window closes and their slots are reused, so memory follows the
live series rather than every series ever seen.  New and refused series are tallied by
metric prefix (the name up to its first ``.``), so that an operator can see who creates them.

Pure: no I/O, no logging, no numpy.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from gateway.protocol import SeriesKey

NONE = -1


def prefix(key: SeriesKey) -> str:
    return key[0].partition(".")[0]


def keys_at(table: Sequence[SeriesKey | None], slots: Iterable[int]) -> list[SeriesKey]:
    """The keys of ``slots`` in a table of keys by slot (``SeriesIndex.export``)."""
    found = list(map(table.__getitem__, slots))
    assert None not in found, "a slot in use has a key"
    return found  # type: ignore[return-value]


class SeriesIndex:
    def __init__(self, max_series: int | None = None) -> None:
        self._index: dict[SeriesKey, int] = {}
        self._keys: list[SeriesKey | None] = []
        self._free: list[int] = []
        self.max_series = max_series
        self.created: Counter[str] = Counter()
        """New series by metric prefix since ``take_tallies``."""
        self.refused: Counter[str] = Counter()
        """Series refused over the budget, by metric prefix, since ``take_tallies``."""

    def __len__(self) -> int:
        """Series in use."""
        return len(self._index)

    @property
    def slots(self) -> int:
        """Slots ever allocated: the length of the aggregator's columns in use."""
        return len(self._keys)

    def get(self, key: SeriesKey) -> int | None:
        return self._index.get(key)

    def has_room(self, new: int) -> bool:
        """Whether ``new`` more series fit in ``max_series``."""
        return self.max_series is None or len(self._index) + new <= self.max_series

    def register(self, key: SeriesKey, samples: int = 1) -> int | None:
        """A slot for a new series; None when the budget is full (the caller drops its
        ``samples``, which are tallied as refused)."""
        if not self.has_room(1):
            self.refused[prefix(key)] += samples
            return None
        if self._free:
            slot = self._free.pop()
            self._keys[slot] = key
        else:
            slot = len(self._keys)
            self._keys.append(key)
        self._index[key] = slot
        self.created[prefix(key)] += 1
        return slot

    def in_use(self) -> list[bool]:
        """Per slot, whether a series holds it."""
        return [key is not None for key in self._keys]

    def evict(self, slots: Iterable[int]) -> int:
        """Free the slots of idle series; returns how many were freed."""
        freed = 0
        for slot in slots:
            key = self._keys[slot]
            if key is not None:
                del self._index[key]
                self._keys[slot] = None
                self._free.append(slot)
                freed += 1
        return freed

    def take_tallies(self) -> tuple[Counter[str], Counter[str]]:
        """(created, refused) by prefix since the last call, and start counting afresh."""
        tallies = self.created, self.refused
        self.created, self.refused = Counter(), Counter()
        return tallies

    def export(self) -> list[SeriesKey | None]:
        """The key of every slot (None: free), as a copy: later evictions leave it as it is."""
        return list(self._keys)

    @classmethod
    def restore(cls, keys: list[SeriesKey | None], max_series: int | None) -> SeriesIndex:
        index = cls(max_series)
        index._keys = list(keys)
        index._index = {key: slot for slot, key in enumerate(keys) if key is not None}
        index._free = [slot for slot, key in enumerate(keys) if key is None]
        return index
