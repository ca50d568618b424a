"""A slow, plain-Python reference aggregator, written from CONTRACT sections 3 and 4.

It owns nothing the gateway runs: tests feed it the same lines as ``gateway.aggregator`` and
compare what both report.  It keeps every sample of every open window in arrival order and
computes each statistic at close time with ordinary dicts, lists, sets and sequential float
arithmetic, so that each rule can be read off one place:

* A sample with no ``|T`` belongs to the window of ``now``.  A ``|T`` sample belongs to its own
  window if that is the current one, or the previous one while ``now`` is within its grace and
  it has not been closed; a stamp in the future goes to the current window; anything older is
  late (dropped, counted).
* A series keeps the type of its first sample while it is live; a sample of another type is a
  conflict and leaves no state.  A series is live while an unclosed window has samples of it;
  a gauge is also live while an unclosed window holds it (see below).  A gauge that is not
  live has expired: its type is free and its value starts again from 0.
* ``c``, ``ms``, ``h``, ``d``: sum = Σ w·v, count = Σ w (w = 1/rate), avg = sum/count; last, max
  and min are raw values.  Gauges: ``+v``/``-v`` adjust the running value (0 if never seen or
  expired), anything else sets it, the rate is ignored; a window reports the mean, last, max
  and min of the values taken in it and the number of updates.  Sets: distinct members.
* A gauge with no samples in window ``c`` is reported held (count 0) with its value at the end
  of the latest earlier window ``u`` that updated it, when ``c - u < gauge_ttl``.

Imports only the parser's records and ``Kind``; no numpy, nothing from the aggregator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.protocol import Kind, Op, Sample, Tags, parse_line

Key = object
Stats = tuple[float, float | None, float, float, float, float]
KeyFunc = Callable[[str, Tags], tuple[object, tuple[str, ...]]]


@dataclass(frozen=True, slots=True)
class RefResult:
    """What the reference did with one ``add``."""

    samples: dict[Kind, int]
    late: int
    conflicts: int


@dataclass(frozen=True, slots=True)
class RefSnapshot:
    start: int
    rows: dict[Key, tuple[Kind, Stats]]


@dataclass(slots=True)
class _Record:
    """Everything one series received in one window, in arrival order."""

    kind: Kind
    numbers: list[tuple[float, float]] = field(default_factory=list)  # (value, weight)
    gauge_values: list[float] = field(default_factory=list)
    members: set[bytes] = field(default_factory=set)

    def stats(self) -> Stats:
        if self.kind is Kind.SET:
            n = float(len(self.members))
            return (n, n, n, n, n, n)
        if self.kind is Kind.GAUGE:
            values = self.gauge_values
            total = 0.0
            for v in values:
                total += v
            return (
                total / len(values),
                None,
                values[-1],
                max(values),
                min(values),
                float(len(values)),
            )
        total = 0.0
        count = 0.0
        for value, weight in self.numbers:
            total += weight * value
            count += weight
        raw = [value for value, _ in self.numbers]
        return (total / count, total, raw[-1], max(raw), min(raw), count)


def samples_of(datagrams: Iterable[bytes]) -> list[Sample]:
    """Every sample of every accepted line, in order, via the one-line parser."""
    out: list[Sample] = []
    for datagram in datagrams:
        for line in datagram.split(b"\n"):
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                continue
            parsed = parse_line(line)
            if isinstance(parsed, tuple):
                out.extend(parsed)
    return out


class ReferenceAggregator:
    def __init__(
        self, *, window: int, grace: float, gauge_ttl: float, now: float, key: KeyFunc
    ) -> None:
        self.length = window
        self.grace = grace
        self.ttl = gauge_ttl
        self.key = key
        self.next_close = self.start_of(now)  # oldest window not yet closed
        self.windows: dict[int, dict[Key, _Record]] = {}  # unclosed windows with samples
        self.kind: dict[Key, Kind] = {}  # claimed types
        self.gauge_value: dict[Key, float] = {}  # running value of each gauge
        # For each gauge, the start of every window that updated it -> its value at that
        # window's end (the last value taken by a sample of that window).
        self.gauge_ends: dict[Key, dict[int, float]] = {}

    def start_of(self, t: float) -> int:
        return int(t // self.length) * self.length

    # --- intake ----------------------------------------------------------------------------

    def add(self, samples: Iterable[Sample], now: float) -> RefResult:
        counts: dict[Kind, int] = {}
        late = 0
        conflicts = 0
        for sample in samples:
            start = self._place(sample.timestamp, now)
            if start is None:
                late += 1
                continue
            key = self.key(sample.name, sample.tags)[0]
            kind = sample.kind
            if not self._live(key):
                self._forget(key)
            owner = self.kind.setdefault(key, kind)
            if owner is not kind:
                conflicts += 1
                continue
            counts[kind] = counts.get(kind, 0) + 1
            record = self.windows.setdefault(start, {}).setdefault(key, _Record(kind))
            if kind is Kind.SET:
                assert sample.member is not None
                record.members.add(sample.member)
            elif kind is Kind.GAUGE:
                value = sample.value
                if sample.op is Op.GAUGE_DELTA:
                    value = self.gauge_value.get(key, 0.0) + value
                self.gauge_value[key] = value
                record.gauge_values.append(value)
                self.gauge_ends.setdefault(key, {})[start] = value
            else:
                record.numbers.append((sample.value, 1.0 / sample.rate))
        return RefResult(counts, late, conflicts)

    def _place(self, stamp: int | None, now: float) -> int | None:
        current = self.start_of(now)
        if stamp is None:
            return current
        own = self.start_of(stamp)
        if own >= current:
            return current
        previous = current - self.length
        if own == previous and now < current + self.grace and previous >= self.next_close:
            return previous
        return None

    def _live(self, key: Key) -> bool:
        """Whether ``key`` still owns its type: samples in an unclosed window, or held in one.

        A gauge with no samples in an unclosed window is held in the oldest unclosed window
        (and so live) when that window starts less than ``ttl`` after the latest window that
        updated it; later unclosed windows are further away, so they never hold it longer.
        """
        kind = self.kind.get(key)
        if kind is None:
            return False
        if any(key in records for records in self.windows.values()):
            return True
        if kind is Kind.GAUGE:
            earlier = [u for u in self.gauge_ends[key] if u < self.next_close]
            return bool(earlier) and self.next_close - max(earlier) < self.ttl
        return False

    def _forget(self, key: Key) -> None:
        self.kind.pop(key, None)
        self.gauge_value.pop(key, None)

    # --- closing ---------------------------------------------------------------------------

    def next_close_time(self) -> float:
        return self.next_close + self.length + self.grace

    def close(self, now: float) -> list[RefSnapshot]:
        out = []
        while self.next_close_time() <= now:
            out.append(self._close_one(self.next_close))
            self.next_close += self.length
        return [snapshot for snapshot in out if snapshot.rows]

    def close_all(self, now: float) -> list[RefSnapshot]:
        last = max([self.start_of(now), *self.windows])
        out = []
        while self.next_close <= last:
            out.append(self._close_one(self.next_close))
            self.next_close += self.length
        return [snapshot for snapshot in out if snapshot.rows]

    def _close_one(self, start: int) -> RefSnapshot:
        records = self.windows.pop(start, {})
        rows: dict[Key, tuple[Kind, Stats]] = {
            key: (record.kind, record.stats()) for key, record in records.items()
        }
        for key, ends in self.gauge_ends.items():
            if key in rows:
                continue
            earlier = [u for u in ends if u < start]
            if earlier and start - max(earlier) < self.ttl:
                value = ends[max(earlier)]
                rows[key] = (Kind.GAUGE, (value, None, value, value, value, 0.0))
        return RefSnapshot(start, rows)
