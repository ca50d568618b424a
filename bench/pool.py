"""The load generator's pre-built datagrams, and what each of them holds (a benchmark helper).

Series ``i`` has a fixed StatsD type, so the load never causes type conflicts:

    i % 10 in 0..3   app.req.{i}:{v}|c|#env:prod,shard:{i % 16}          counter
    i % 10 in 4..5   app.mem.{i}:{v}|g|#env:prod,shard:{i % 16}          gauge
    i % 10 in 6..8   app.lat.{i}:{v}|ms|@0.5|#env:prod,shard:{i % 16}    timer, rate 0.5
    i % 10 == 9      app.user.{i}:u{v}|s|#env:prod,shard:{i % 16}        set

The pool is a stream of rounds, each round one line for every series in order (values change
from round to round), cut into datagrams: ``packed`` fills each datagram with whole lines up
to a byte budget (~35 lines in 1,400 bytes), ``single`` puts one line in each.  The pool holds
at least one full round, so cycling through it sends every series.

Standard library only; never imports ``gateway``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

TIMER_RATE = 0.5


class Shape(enum.StrEnum):
    PACKED = "packed"
    SINGLE = "single"


@dataclass(frozen=True, slots=True)
class Tally:
    """What some datagrams hold: counts per StatsD type and the exact counter sum."""

    datagrams: int = 0
    lines: int = 0
    c: int = 0
    g: int = 0
    ms: int = 0
    s: int = 0
    counter_sum: int = 0
    timer_weight: float = 0.0

    def add(self, other: Tally, times: int) -> Tally:
        return Tally(
            self.datagrams + other.datagrams * times,
            self.lines + other.lines * times,
            self.c + other.c * times,
            self.g + other.g * times,
            self.ms + other.ms * times,
            self.s + other.s * times,
            self.counter_sum + other.counter_sum * times,
            self.timer_weight + other.timer_weight * times,
        )


@dataclass(frozen=True, slots=True)
class Pool:
    datagrams: list[bytes]
    tallies: list[Tally]
    total: Tally


def line(i: int, round_: int) -> tuple[bytes, str, int]:
    """Series ``i``'s line in round ``round_``: its bytes, its type and its value."""
    v = 1 + (i * 7 + round_) % 97
    tags = f"#env:prod,shard:{i % 16}"
    kind = i % 10
    if kind < 4:
        return f"app.req.{i}:{v}|c|{tags}".encode(), "c", v
    if kind < 6:
        return f"app.mem.{i}:{v}|g|{tags}".encode(), "g", v
    if kind < 9:
        return f"app.lat.{i}:{v}|ms|@{TIMER_RATE}|{tags}".encode(), "ms", v
    return f"app.user.{i}:u{v % 50}|s|{tags}".encode(), "s", v


class _Packer:
    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.datagrams: list[bytes] = []
        self.tallies: list[Tally] = []
        self._lines: list[bytes] = []
        self._size = 0
        self._counts = {"c": 0, "g": 0, "ms": 0, "s": 0}
        self._counter_sum = 0

    def add(self, data: bytes, kind: str, value: int) -> None:
        extra = len(data) + (1 if self._lines else 0)
        if self._lines and self._size + extra > self.budget:
            self.cut()
            extra = len(data)
        self._lines.append(data)
        self._size += extra
        self._counts[kind] += 1
        if kind == "c":
            self._counter_sum += value

    def cut(self) -> None:
        if not self._lines:
            return
        counts = self._counts
        self.datagrams.append(b"\n".join(self._lines))
        self.tallies.append(
            Tally(
                datagrams=1,
                lines=len(self._lines),
                c=counts["c"],
                g=counts["g"],
                ms=counts["ms"],
                s=counts["s"],
                counter_sum=self._counter_sum,
                timer_weight=counts["ms"] / TIMER_RATE,
            )
        )
        self._lines, self._size, self._counter_sum = [], 0, 0
        self._counts = {"c": 0, "g": 0, "ms": 0, "s": 0}


def build_pool(shape: Shape, series: int, datagram_bytes: int, min_lines: int) -> Pool:
    """Whole rounds of every series until the pool holds at least ``min_lines`` lines."""
    packer = _Packer(datagram_bytes if shape is Shape.PACKED else 0)
    lines = 0
    round_ = 0
    while round_ == 0 or lines < min_lines:
        for i in range(series):
            packer.add(*line(i, round_))
        lines += series
        round_ += 1
    packer.cut()
    total = Tally()
    for tally in packer.tallies:
        total = total.add(tally, 1)
    return Pool(packer.datagrams, packer.tallies, total)
