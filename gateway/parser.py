"""The batch parser: whole datagrams in, numpy columns of samples out (CONTRACT 2).

Most traffic repeats the same names, types, rates and tags with new values.  A batch is
scanned as one buffer (``gateway.scan``): each line's *template*, the line without its value,
is looked up in a cache that remembers the series, type and rate it stands for, and the values
of every line that hits are converted together.  What is left per line is one dict lookup,
done by ``map`` in C.  Lines that miss the cache, and the few shapes the cache never holds
(packing, etsy chains, ``|T``, rejects), go through the grammar in ``gateway.protocol`` one
at a time; samples keep their arrival order either way.

Series keys leave the parser as small integers into the parser's key table
(``ParsedBatch.key_table``), so that the aggregator maps a whole batch to its rows with one
array lookup.  A table is only ever appended to.  Once it holds twice ``cache_size`` keys,
between batches, the parser starts a new table holding only the keys its cached templates
still use, renumbered; whoever keeps ids must forget them when a batch brings another
table (the aggregator compares the table object).

Pure: no I/O, no logging, no clock, no asyncio.  numpy: yes, since ``gateway.scan``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from gateway.protocol import (
    Ignored,
    Op,
    Reject,
    SeriesKey,
    Tags,
    analyse,
    expand,
    parse_number,
)
from gateway.scan import Lines, decimals, scan, templates

NO_TIMESTAMP = -1
"""The ``timestamps`` column's value for a sample without ``|T`` (``T0`` is the epoch)."""
_SET, _GAUGE, _GAUGE_DELTA = int(Op.SET), int(Op.GAUGE), int(Op.GAUGE_DELTA)
_PLUS, _MINUS = ord("+"), ord("-")
_MISS = -1

KeyFunc = Callable[[str, Tags], tuple[SeriesKey, tuple[str, ...]]]
"""Maps (metric, tags) to the aggregator's series key and the reasons of any dropped tags.

See ``gateway.series``; the parser only stores and counts what it is told.
"""

Ints = npt.NDArray[np.intp]
_T = TypeVar("_T", bound=np.generic)


@dataclass(slots=True)
class ParsedBatch:
    """Columns of samples parsed from a batch of datagrams, and what happened to each line.

    ``key_ids``, ``ops``, ``values``, ``weights`` and ``timestamps`` are numpy arrays with
    one entry per sample, in arrival order: ``key_ids`` index ``key_table``, ``ops`` holds
    ``Op`` values, ``weights`` is ``1/rate`` and
    ``timestamps`` holds ``NO_TIMESTAMP`` when the line had no ``|T``.  ``members`` holds
    one entry per set sample, in order.
    """

    key_ids: Ints = field(default_factory=lambda: np.zeros(0, dtype=np.intp))
    ops: npt.NDArray[np.int8] = field(default_factory=lambda: np.zeros(0, dtype=np.int8))
    values: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    weights: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    timestamps: npt.NDArray[np.int64] = field(default_factory=lambda: np.zeros(0, np.int64))
    members: list[bytes] = field(default_factory=list)
    key_table: list[SeriesKey] = field(default_factory=list)
    lines: int = 0
    accepted: int = 0
    rejects: dict[Reject, int] = field(default_factory=dict)
    ignored: dict[Ignored, int] = field(default_factory=dict)
    dropped_tags: dict[str, int] = field(default_factory=dict)

    @property
    def keys(self) -> list[SeriesKey]:
        """The series key of each sample (built on demand: the aggregator uses the ids)."""
        table = self.key_table
        return [table[i] for i in self.key_ids.tolist()]


@dataclass(slots=True)
class _Slow:
    """Samples of the lines parsed one at a time, with the line each came from."""

    line: list[int] = field(default_factory=list)
    key_ids: list[int] = field(default_factory=list)
    ops: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    member_line: list[int] = field(default_factory=list)
    members: list[bytes] = field(default_factory=list)


class Parser:
    """Parses batches of datagrams into columns; see the module docstring."""

    def __init__(self, key: KeyFunc, *, cache_size: int = 262_144) -> None:
        self._key = key
        self._cache_size = cache_size
        self._key_table: list[SeriesKey] = []
        self._key_ids: dict[SeriesKey, int] = {}
        self._templates: dict[bytes, int] = {}  # template -> entry
        self._free: list[int] = []
        self._entries = 0
        self._entry_key = np.zeros(1024, dtype=np.intp)
        self._entry_op = np.zeros(1024, dtype=np.int8)
        self._entry_weight = np.zeros(1024)
        self._entry_drops: list[tuple[str, ...]] = [()] * 1024
        self._entry_dropping = np.zeros(1024, dtype=bool)

    @property
    def cache_size(self) -> int:
        """Most templates kept; past it the oldest quarter is dropped."""
        return self._cache_size

    def _renumber_keys(self) -> None:
        """Start a new key table with only the keys that cached templates still use.

        Keys of templates dropped from the cache, and of lines never cached, go; the
        templates stay, so no line has to take the full path again because of this.
        """
        entries = np.fromiter(self._templates.values(), dtype=np.intp, count=len(self._templates))
        used, renumbered = np.unique(self._entry_key[entries], return_inverse=True)
        old = self._key_table
        self._key_table = [old[i] for i in used.tolist()]  # a new list: batches keep theirs
        self._key_ids = {key: i for i, key in enumerate(self._key_table)}
        self._entry_key[entries] = renumbered

    def parse(self, datagrams: Iterable[bytes]) -> ParsedBatch:
        """Parse every line of ``datagrams``; samples keep their arrival order."""
        data = b"\n".join(datagrams)
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
            if data[-1:] == b"\r":
                data = data[:-1]
        if len(self._key_table) > 2 * self._cache_size:
            self._renumber_keys()  # only between batches: a batch's ids share one table
        out = ParsedBatch(key_table=self._key_table)
        lines = scan(data)
        entry = np.fromiter(
            map(self._templates.get, templates(lines), itertools.repeat(_MISS)),
            dtype=np.intp,
            count=len(lines),
        )
        entry[~lines.valued] = _MISS
        nonempty = lines.end > lines.start
        out.lines = int(np.count_nonzero(nonempty))
        hits = np.flatnonzero(entry != _MISS)
        slow = np.zeros(len(lines), dtype=bool)
        fast = self._fast(lines, hits, entry[hits], slow, out)
        slow |= nonempty & (entry == _MISS)
        found = _Slow()
        for row in np.flatnonzero(slow).tolist():
            line = data[lines.start[row] : lines.end[row]]
            self._parse_slow(row, line, found, out)
        _merge(out, fast, found)
        out.accepted = out.lines - sum(out.rejects.values()) - sum(out.ignored.values())
        return out

    def _fast(
        self,
        lines: Lines,
        rows: Ints,
        entry: Ints,
        slow: npt.NDArray[np.bool_],
        out: ParsedBatch,
    ) -> tuple[Ints, list[int]]:
        """Fill ``out``'s columns from the lines whose template is cached.

        Returns the line of each sample and of each set member.  Values that are not plain
        decimals are checked one at a time: a bad one is rejected, and DogStatsD packing
        (``name:1:2|c``, which shares its template with ``name:1|c``) is marked ``slow``.
        """
        first = lines.colon[rows] + 1
        length = lines.pipe[rows] - first
        ops = self._entry_op[entry]
        values, exact = decimals(lines.buf, first, length)
        is_set = ops == _SET
        keep = np.ones(len(rows), dtype=bool)
        data = lines.data
        for j in np.flatnonzero(~exact & ~is_set).tolist():
            raw = data[first[j] : first[j] + length[j]]
            number = parse_number(raw)
            if number is not None:
                values[j] = number
                continue
            keep[j] = False
            if b":" in raw:
                slow[rows[j]] = True
            else:
                out.rejects[Reject.BAD_VALUE] = out.rejects.get(Reject.BAD_VALUE, 0) + 1
        if not keep.all():
            rows, entry, first, length = rows[keep], entry[keep], first[keep], length[keep]
            ops, values, is_set = ops[keep], values[keep], is_set[keep]
        signed = lines.buf[first]
        ops[(ops == _GAUGE) & ((signed == _PLUS) | (signed == _MINUS))] = _GAUGE_DELTA
        if is_set.any():
            values[is_set] = 0.0
            starts = first[is_set]
            out.members = list(
                map(
                    data.__getitem__,
                    map(slice, starts.tolist(), (starts + length[is_set]).tolist()),
                )
            )
        dropping = entry[self._entry_dropping[entry]]
        if len(dropping):
            for entry_id, n in zip(*np.unique(dropping, return_counts=True), strict=True):
                for reason in self._entry_drops[entry_id]:
                    out.dropped_tags[reason] = out.dropped_tags.get(reason, 0) + int(n)
        out.key_ids = self._entry_key[entry]
        out.ops = ops
        out.values = values
        out.weights = self._entry_weight[entry]
        out.timestamps = np.full(len(rows), NO_TIMESTAMP, dtype=np.int64)
        return rows, rows[is_set].tolist()

    def _parse_slow(self, row: int, line: bytes, found: _Slow, out: ParsedBatch) -> None:
        parsed = analyse(line)
        if isinstance(parsed, Reject):
            out.rejects[parsed] = out.rejects.get(parsed, 0) + 1
            return
        if isinstance(parsed, Ignored):
            out.ignored[parsed] = out.ignored.get(parsed, 0) + 1
            return
        key, drops = self._key(parsed.name, parsed.tags)
        for reason in drops:
            out.dropped_tags[reason] = out.dropped_tags.get(reason, 0) + 1
        key_id = self._key_id(key)
        for group in parsed.groups:
            weight = 1.0 / group.rate
            stamp = NO_TIMESTAMP if group.timestamp is None else group.timestamp
            for op, value, member in expand(group):
                found.line.append(row)
                found.key_ids.append(key_id)
                found.ops.append(int(op))
                found.values.append(value)
                found.weights.append(weight)
                found.timestamps.append(stamp)
                if member is not None:
                    found.member_line.append(row)
                    found.members.append(member)
        if len(parsed.groups) == 1 and parsed.groups[0].timestamp is None:
            group = parsed.groups[0]
            if group.op is Op.SET or b":" not in group.values:
                name, _, rest = line.partition(b":")
                template = name + b":|" + rest.partition(b"|")[2]
                self._remember(template, key_id, int(group.op), 1.0 / group.rate, drops)

    def _key_id(self, key: SeriesKey) -> int:
        key_id = self._key_ids.get(key)
        if key_id is None:
            key_id = self._key_ids[key] = len(self._key_table)
            self._key_table.append(key)
        return key_id

    def _remember(
        self, template: bytes, key_id: int, op: int, weight: float, drops: tuple[str, ...]
    ) -> None:
        """Cache a template.  Past ``cache_size`` templates the oldest quarter is dropped
        (clearing all at once would send every line the slow way at the same moment)."""
        if template in self._templates:
            return
        if len(self._templates) >= self._cache_size:
            oldest = list(itertools.islice(self._templates.items(), max(1, self._cache_size // 4)))
            for old, old_entry in oldest:
                del self._templates[old]
                self._free.append(old_entry)
        if self._free:
            entry = self._free.pop()
        else:
            entry = self._entries
            self._entries += 1
            if entry >= len(self._entry_key):
                self._grow()
        self._entry_key[entry] = key_id
        self._entry_op[entry] = op
        self._entry_weight[entry] = weight
        self._entry_drops[entry] = drops
        self._entry_dropping[entry] = bool(drops)
        self._templates[template] = entry

    def _grow(self) -> None:
        size = 2 * len(self._entry_key)
        self._entry_key = _grown(self._entry_key, size)
        self._entry_op = _grown(self._entry_op, size)
        self._entry_weight = _grown(self._entry_weight, size)
        self._entry_dropping = _grown(self._entry_dropping, size)
        self._entry_drops.extend([()] * (size - len(self._entry_drops)))


def _grown(column: npt.NDArray[_T], size: int) -> npt.NDArray[_T]:
    return np.concatenate([column, np.zeros(size - len(column), dtype=column.dtype)])


def _merge(out: ParsedBatch, fast: tuple[Ints, list[int]], slow: _Slow) -> None:
    """Add the slow lines' samples to the fast columns in ``out``, in line order."""
    if not slow.line:
        return
    line = np.concatenate([fast[0], np.array(slow.line, dtype=np.intp)])
    order = np.argsort(line, kind="stable")
    out.key_ids = np.concatenate([out.key_ids, np.array(slow.key_ids, dtype=np.intp)])[order]
    out.ops = np.concatenate([out.ops, np.array(slow.ops, dtype=np.int8)])[order]
    out.values = np.concatenate([out.values, np.array(slow.values)])[order]
    out.weights = np.concatenate([out.weights, np.array(slow.weights)])[order]
    out.timestamps = np.concatenate([out.timestamps, np.array(slow.timestamps, np.int64)])[order]
    if slow.members:
        member_line = np.array(fast[1] + slow.member_line, dtype=np.intp)
        members = out.members + slow.members
        out.members = [members[i] for i in np.argsort(member_line, kind="stable").tolist()]
