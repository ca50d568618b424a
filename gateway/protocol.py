"""The StatsD line grammar (CONTRACT 2): bytes in, typed samples or reason-coded rejects out.

One line is ``name ":" value "|" type *( "|" field )``, with DogStatsD packing
(``name:1:2:3|ms``), etsy's multi-value form (``name:1|c:2|c|@0.5``), DogStatsD tags and the
Influx, Librato, SignalFx and Graphite name-tag dialects.  A line with any fault is rejected
whole, with one reason, and never affects its neighbours.

``parse_line`` is the readable reference for one line; ``gateway.parser.Parser`` is the batch
form the listener uses, built on the same private helpers.

Pure: no I/O, no logging, no clock, no asyncio, no numpy.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from sys import intern

from gateway.names import MAX_NAME_BYTES, sanitize


class Kind(enum.IntEnum):
    """A series' type, for conflicts and aggregation. ``h`` and ``d`` are timers."""

    COUNTER = 0
    GAUGE = 1
    TIMER = 2
    SET = 3


class Op(enum.IntEnum):
    """What one sample does; a gauge with a sign adjusts instead of setting."""

    COUNTER = 0
    GAUGE = 1
    TIMER = 2
    SET = 3
    GAUGE_DELTA = 4

    @property
    def kind(self) -> Kind:
        return Kind.GAUGE if self is Op.GAUGE_DELTA else Kind(self.value)


class Reject(enum.StrEnum):
    """Why a line was rejected; the value is the ``reason`` label in ``/metrics``."""

    MISSING_COLON = "missing_colon"
    MISSING_TYPE = "missing_type"
    UNKNOWN_TYPE = "unknown_type"
    BAD_VALUE = "bad_value"
    BAD_RATE = "bad_rate"
    BAD_TIMESTAMP = "bad_timestamp"
    BAD_NAME_TAG = "bad_name_tag"
    EMPTY_NAME = "empty_name"
    NAME_TOO_LONG = "name_too_long"
    BAD_UTF8 = "bad_utf8"


class Ignored(enum.StrEnum):
    """Valid DogStatsD lines the API has no place for: counted, then ignored."""

    EVENT = "event"
    SERVICE_CHECK = "service_check"


Tags = tuple[tuple[str, str], ...]
"""Sanitised ``(key, value)`` pairs, sorted by key, one per key."""

SeriesKey = tuple[str, Tags]
"""(metric, dimensions) of one series, dimensions in their final order (``gateway.series``)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample of one line, as ``parse_line`` returns it."""

    name: str
    tags: Tags
    op: Op
    value: float = 0.0
    rate: float = 1.0
    member: bytes | None = None
    timestamp: int | None = None

    @property
    def kind(self) -> Kind:
        return self.op.kind


_TYPES: dict[bytes, Op] = {
    b"c": Op.COUNTER,
    b"g": Op.GAUGE,
    b"ms": Op.TIMER,
    b"h": Op.TIMER,
    b"d": Op.TIMER,
    b"s": Op.SET,
}
_NUMBER_CHARS = b"0123456789.+-eE"
_SIGNS = (b"+", b"-")
FAR_FUTURE = 10**12
"""What a ``|T`` of more than 12 digits becomes: later than any window."""


def parse_number(raw: bytes) -> float | None:
    """Decimal or exponent notation, finite; ``None`` for anything else (nan, 0x10, 1_000, 1e309).

    ``float`` alone would accept ``nan``, ``inf``, ``1_000`` and surrounding blanks; allowing
    only digits, ``.``, signs and ``e`` first leaves exactly the contract's grammar.
    """
    if not raw or raw.translate(None, _NUMBER_CHARS):
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


@dataclass(slots=True)
class Group:
    """One ``values|type|fields`` group of a line (etsy's form chains several)."""

    values: bytes
    op: Op
    rate: float = 1.0
    timestamp: int | None = None
    dog_tags: list[tuple[str, str]] = field(default_factory=list)


def _split_groups(rest: bytes) -> list[tuple[bytes, bytes, list[bytes]]] | Reject:
    """Split what follows the name into (values, type, fields) groups.

    A ``:`` inside the type field, or right after a rate, starts the next group (etsy).
    Colons anywhere else (values, tags, ``c:`` fields) belong to their field.
    """
    segments = rest.split(b"|")
    groups: list[tuple[bytes, bytes, list[bytes]]] = []
    values = segments[0]
    i = 1
    while True:
        if i >= len(segments) or not segments[i]:
            return Reject.MISSING_TYPE
        type_field, colon, following = segments[i].partition(b":")
        i += 1
        fields: list[bytes] = []
        if not colon:
            while i < len(segments):
                item = segments[i]
                i += 1
                if item[:1] == b"@" and b":" in item:
                    item, colon, following = item.partition(b":")
                    fields.append(item)
                    break
                fields.append(item)
        groups.append((values, type_field, fields))
        if not colon:
            return groups
        values = following


def _parse_group(values: bytes, type_field: bytes, fields: list[bytes]) -> Group | Reject:
    op = _TYPES.get(type_field)
    if op is None:
        return Reject.UNKNOWN_TYPE
    group = Group(values, op)
    for item in fields:
        head = item[:1]
        if head == b"@":
            rate = parse_number(item[1:])
            # A subnormal rate would make the weight 1/rate infinite.
            if rate is None or not 0.0 < rate <= 1.0 or math.isinf(1.0 / rate):
                return Reject.BAD_RATE
            group.rate = rate
        elif head == b"#":
            group.dog_tags.extend(_dog_tags(item[1:]))
        elif head == b"T":
            digits = item[1:]
            if not digits.isdigit():
                return Reject.BAD_TIMESTAMP
            # Any stamp this long is far in the future, which means "the current window".
            group.timestamp = int(digits) if len(digits) <= 12 else FAR_FUTURE
        # c:, e:, card: and unknown fields are ignored.
    return group


def _dog_tags(raw: bytes) -> Iterable[tuple[str, str]]:
    """DogStatsD ``#tag,tag:value``: split at the first ``:``; a bare tag means ``true``."""
    for item in raw.split(b","):
        key, colon, value = item.partition(b":")
        if key:
            # Interned: the same few tag keys and values recur across many series.
            yield intern(sanitize(key)), intern(sanitize(value)) if colon else "true"


def _name_tags(raw: bytes) -> tuple[bytes, list[tuple[str, str]]] | Reject:
    """Strip Influx/Librato/SignalFx/Graphite tag syntax from a name; return (metric, tags)."""
    pairs: list[bytes] = []
    start = raw.find(b"[")
    if start >= 0:  # SignalFx: pre[k=v,...]post is metric "prepost"
        end = raw.find(b"]", start)
        if end < 0:
            return Reject.BAD_NAME_TAG
        inner = raw[start + 1 : end]
        if inner:
            pairs.extend(inner.split(b","))
        raw = raw[:start] + raw[end + 1 :]
    cut = min((i for i in (raw.find(b","), raw.find(b";"), raw.find(b"#")) if i >= 0), default=-1)
    if cut >= 0:  # Influx name,k=v / Graphite name;k=v / Librato name#k=v,k2=v2
        pairs.extend(raw[cut + 1 :].split(b";" if raw[cut : cut + 1] == b";" else b","))
        raw = raw[:cut]
    tags: list[tuple[str, str]] = []
    for pair in pairs:
        key, eq, value = pair.partition(b"=")
        if not eq:
            return Reject.BAD_NAME_TAG
        if key:
            tags.append((intern(sanitize(key)), intern(sanitize(value))))
    return raw, tags


@dataclass(frozen=True, slots=True)
class ParsedLine:
    """A valid line: its metric, merged tags and value groups (before packing is expanded)."""

    name: str
    tags: Tags
    groups: list[Group]


def analyse(line: bytes) -> ParsedLine | Reject | Ignored:
    """One line (without its newline) checked against the whole grammar."""
    if line[:3] == b"_e{":
        return Ignored.EVENT
    if line[:4] == b"_sc|":
        return Ignored.SERVICE_CHECK
    raw_name, colon, rest = line.partition(b":")
    if not colon:
        return Reject.MISSING_COLON
    split = _split_groups(rest)
    if isinstance(split, Reject):
        return split
    groups: list[Group] = []
    for values, type_field, fields in split:
        group = _parse_group(values, type_field, fields)
        if isinstance(group, Reject):
            return group
        groups.append(group)
    stripped = _name_tags(raw_name)
    if isinstance(stripped, Reject):
        return stripped
    metric, name_tags = stripped
    try:  # tag keys and values are sanitised byte-wise; the metric name must be UTF-8
        metric.decode("utf-8")
    except UnicodeDecodeError:
        return Reject.BAD_UTF8
    if not metric:
        return Reject.EMPTY_NAME
    if len(metric) > MAX_NAME_BYTES:  # sanitising maps each byte to one character
        return Reject.NAME_TOO_LONG
    for group in groups:
        if group.op is not Op.SET and any(
            parse_number(raw) is None for raw in group.values.split(b":")
        ):
            return Reject.BAD_VALUE
    # Name tags first, DogStatsD tags after, so that on a shared key the DogStatsD tag wins.
    merged = dict(name_tags)
    for group in groups:
        merged.update(group.dog_tags)
    return ParsedLine(sanitize(metric), tuple(sorted(merged.items())), groups)


def expand(group: Group) -> Iterable[tuple[Op, float, bytes | None]]:
    """The (op, value, member) samples of one group, in order (DogStatsD packing)."""
    if group.op is Op.SET:
        yield Op.SET, 0.0, group.values
        return
    for raw in group.values.split(b":"):
        value = float(raw)
        if group.op is Op.GAUGE and raw[:1] in _SIGNS:
            yield Op.GAUGE_DELTA, value, None
        else:
            yield group.op, value, None


def parse_line(line: bytes) -> tuple[Sample, ...] | Reject | Ignored:
    """Parse one line (without its newline; a trailing ``\\r`` is stripped)."""
    if line[-1:] == b"\r":
        line = line[:-1]
    parsed = analyse(line)
    if isinstance(parsed, Reject | Ignored):
        return parsed
    return tuple(
        Sample(parsed.name, parsed.tags, op, value, group.rate, member, group.timestamp)
        for group in parsed.groups
        for op, value, member in expand(group)
    )
