"""The batch parser: whole datagrams in, columns of samples out (CONTRACT 2).

Most traffic repeats the same names, types, rates and tags with new values, so the part of a
line around its value is cached with its series key, and a repeated line costs two
``partition`` calls, one dict lookup and a ``float``.  Anything else goes through the
grammar in ``gateway.protocol``, one line at a time; samples keep their arrival order either
way.  The columns are lists of plain numbers, which the aggregator turns into numpy arrays.

Pure: no I/O, no logging, no clock, no asyncio, no numpy.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

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

NO_TIMESTAMP = -1
"""The ``timestamps`` column's value for a sample without ``|T`` (``T0`` is the epoch)."""
_SIGNS = (b"+", b"-")
_SET, _GAUGE, _GAUGE_DELTA = int(Op.SET), int(Op.GAUGE), int(Op.GAUGE_DELTA)

KeyFunc = Callable[[str, Tags], tuple[SeriesKey, tuple[str, ...]]]
"""Maps (metric, tags) to the aggregator's series key and the reasons of any dropped tags.

See ``gateway.series``; the parser only stores and counts what it is told.
"""


@dataclass(slots=True)
class ParsedBatch:
    """Columns of samples parsed from a batch of datagrams, and what happened to each line.

    ``keys``, ``ops``, ``values``, ``weights`` and ``timestamps`` have one entry per sample
    (``ops`` holds ``Op`` values as plain ints, which numpy takes in fast; ``weights`` is
    ``1/rate``; ``timestamps`` holds ``NO_TIMESTAMP`` when the line had no ``|T``);
    ``members`` holds one entry per set sample, in order.
    """

    keys: list[SeriesKey] = field(default_factory=list)
    ops: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    members: list[bytes] = field(default_factory=list)
    lines: int = 0
    accepted: int = 0
    rejects: dict[Reject, int] = field(default_factory=dict)
    ignored: dict[Ignored, int] = field(default_factory=dict)
    dropped_tags: dict[str, int] = field(default_factory=dict)

    def _drop_tags(self, reasons: tuple[str, ...]) -> None:
        for reason in reasons:
            self.dropped_tags[reason] = self.dropped_tags.get(reason, 0) + 1


class Parser:
    """Parses batches of datagrams into columns.

    Most traffic repeats the same names, types, rates and tags with new values, so the part
    of a line around its value (``name`` and everything after the first ``|``) is cached with
    its series key: a repeated line costs two ``partition`` calls, one dict lookup and a
    ``float``.  Lines with packing, etsy chains or ``|T`` always take the full path.
    """

    def __init__(self, key: KeyFunc, *, cache_size: int = 262_144) -> None:
        self._key = key
        self._cache: dict[tuple[bytes, bytes], tuple[SeriesKey, int, float, tuple[str, ...]]] = {}
        self._cache_size = cache_size

    @property
    def cache_size(self) -> int:
        """Most repeated lines kept; past it the oldest quarter is dropped."""
        return self._cache_size

    def parse(self, datagrams: Iterable[bytes]) -> ParsedBatch:
        """Parse every line of ``datagrams``; samples keep their arrival order."""
        out = ParsedBatch()
        cache_get = self._cache.get
        keys, ops, values, weights = out.keys, out.ops, out.values, out.weights
        timestamps, members = out.timestamps, out.members
        lines = 0
        data = b"\n".join(datagrams)
        if b"\r" in data:
            data = data.replace(b"\r\n", b"\n")
            if data[-1:] == b"\r":
                data = data[:-1]
        for line in data.split(b"\n"):
            if not line:
                continue
            lines += 1
            name, _, rest = line.partition(b":")
            raw, _, tail = rest.partition(b"|")
            entry = cache_get((name, tail))
            if entry is None:
                self._parse_slow(line, out)
                continue
            key, op, weight, drops = entry
            if op == _SET:
                members.append(raw)
                value = 0.0
            else:
                number = parse_number(raw)
                if number is None:
                    if b":" in raw:  # DogStatsD packing
                        self._parse_slow(line, out)
                    else:
                        out.rejects[Reject.BAD_VALUE] = out.rejects.get(Reject.BAD_VALUE, 0) + 1
                    continue
                value = number
                if op == _GAUGE and raw[:1] in _SIGNS:
                    op = _GAUGE_DELTA
            keys.append(key)
            ops.append(op)
            values.append(value)
            weights.append(weight)
            timestamps.append(NO_TIMESTAMP)
            if drops:
                out._drop_tags(drops)
        out.lines = lines
        out.accepted = lines - sum(out.rejects.values()) - sum(out.ignored.values())
        return out

    def _evict_oldest(self) -> None:
        """Drop the oldest quarter of the cache (dicts keep insertion order).

        Clearing it all at once made every line take the slow path at the same moment.
        """
        oldest = list(itertools.islice(self._cache, max(1, self._cache_size // 4)))
        for entry in oldest:
            del self._cache[entry]

    def _parse_slow(self, line: bytes, out: ParsedBatch) -> None:
        parsed = analyse(line)
        if isinstance(parsed, Reject):
            out.rejects[parsed] = out.rejects.get(parsed, 0) + 1
            return
        if isinstance(parsed, Ignored):
            out.ignored[parsed] = out.ignored.get(parsed, 0) + 1
            return
        key, drops = self._key(parsed.name, parsed.tags)
        out._drop_tags(drops)
        for group in parsed.groups:
            weight = 1.0 / group.rate
            for op, value, member in expand(group):
                out.keys.append(key)
                out.ops.append(int(op))
                out.values.append(value)
                out.weights.append(weight)
                out.timestamps.append(NO_TIMESTAMP if group.timestamp is None else group.timestamp)
                if member is not None:
                    out.members.append(member)
        if len(parsed.groups) == 1 and parsed.groups[0].timestamp is None:
            group = parsed.groups[0]
            name, _, rest = line.partition(b":")
            if group.op is Op.SET or b":" not in group.values:
                if len(self._cache) >= self._cache_size:
                    self._evict_oldest()
                tail = rest.partition(b"|")[2]
                self._cache[(name, tail)] = (key, int(group.op), 1.0 / group.rate, drops)
