"""``--workers``: windows aggregated by several workers and merged equal one aggregator's.

Random workloads from several senders; the kernel sends each sender to one worker
(``sender % workers`` here), so each worker aggregates the lines of its senders.  One
``Aggregator`` gets every line, the workers' closed windows go through a ``Merger``, and
every reported window must be the same: the same windows, series, kinds, and every
statistic within 1e-9 relative, held gauges included.  Senders send in turn, each at its
own time, so "last" has one right answer.  Gauge deltas go to gauges of one sender, as the
merge's rules (docs/architecture.md) make exact.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.aggregator import Aggregator
from gateway.merge import Merger, merge
from gateway.parser import Parser
from gateway.protocol import Kind, SeriesKey
from gateway.series import SeriesNamer
from gateway.window import Stats, WindowSnapshot

B = 1_700_000_040 - 600
HOST = (("host", "h"),)
VALUES = ("1", "2", "0", "-3", "2.5", ".5", "1e2", "7", "1000", "0.001")


def sender_line(rng: random.Random, sender: int, series: int) -> str:
    kind = ("c", "ms", "g", "s", "gd")[series % 5]
    tags = ("", "|#env:prod", "|#role:db")[series % 3]
    stamp = ""
    if rng.random() < 0.1:
        stamp = "|T{stamp}"  # filled in by the caller, who knows the time
    if kind == "s":
        return f"s{series}:{rng.choice('abcdefg')}|s{tags}{stamp}"
    if kind == "gd":  # a gauge adjusted with deltas: one sender's own gauge
        value = rng.choice(("", "+", "-")) + rng.choice(VALUES).lstrip("-")
        return f"gd{series}.{sender}:{value}|g{tags}{stamp}"
    rate = rng.choice(("", "", "|@0.5", "|@0.1"))
    values = ":".join(rng.choice(VALUES) for _ in range(rng.choice((1, 1, 2))))
    if kind == "g":
        values = rng.choice(VALUES).lstrip("-")
    return f"{kind}{series}:{values}|{kind}{rate}{tags}{stamp}"


def table(snapshots: list[WindowSnapshot]) -> list[tuple[int, dict[SeriesKey, tuple[Kind, Stats]]]]:
    out = []
    for snapshot in snapshots:
        rows = {key: (kind, stats) for key, kind, stats in snapshot.rows()}
        if rows:
            out.append((snapshot.start, rows))
    return out


def assert_same(got: list[WindowSnapshot], want: list[WindowSnapshot], where: str) -> None:
    got_t, want_t = table(got), table(want)
    assert [s for s, _ in got_t] == [s for s, _ in want_t], where
    for (start, rows), (_, expected) in zip(got_t, want_t, strict=True):
        assert rows.keys() == expected.keys(), f"{where} window {start}"
        for key, (kind, stats) in expected.items():
            got_kind, got_stats = rows[key]
            assert got_kind is kind, f"{where} window {start} {key}"
            for a, b in zip(got_stats, stats, strict=True):
                if a is None or b is None:
                    assert a is b, f"{where} window {start} {key}: {got_stats} != {stats}"
                else:
                    ok = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
                    assert ok, f"{where} window {start} {key}: {got_stats} != {stats}"


class Split:
    """One aggregator and ``workers`` aggregators plus a merger, driven in lockstep."""

    def __init__(self, workers: int, window: int, ttl: float, now: float) -> None:
        namer = SeriesNamer(HOST)
        self.parser = Parser(namer)

        def aggregator() -> Aggregator:
            return Aggregator(window=window, grace=2, gauge_ttl=ttl, now=now)

        self.one = aggregator()
        self.workers = [aggregator() for _ in range(workers)]
        self.merger = Merger(length=window, gauge_ttl=ttl, first_start=self.one.open_from)
        self.reported: list[WindowSnapshot] = []
        self.merged: list[WindowSnapshot] = []

    def send(self, sender: int, lines: list[str], at: float) -> None:
        data = ["\n".join(lines).encode()]
        self.one.add(self.parser.parse(data), at)
        self.workers[sender % len(self.workers)].add(self.parser.parse(data), at)

    def close(self, now: float, *, everything: bool = False) -> None:
        if everything:
            self.reported += self.one.close_all(now)
            parts = [w.close_all(now) for w in self.workers]
        else:
            self.reported += self.one.close(now)
            parts = [w.close(now) for w in self.workers]
        for closed in parts:
            for part in closed:
                self.merger.add(part)
        limit = min(w.open_from for w in self.workers)
        self.merged += [m.snapshot for m in self.merger.merge_before(limit)]


def play(seed: int, workers: int, window: int, ttl: float, steps: int) -> None:
    rng = random.Random(seed)
    now = B + rng.uniform(0, window)
    split = Split(workers, window, ttl, now)
    senders = rng.randint(workers, 8)
    for step in range(steps):
        now += rng.choice((0.05, 0.5, window / 3, float(window), rng.uniform(window, 4 * window)))
        split.close(now)
        for sender in rng.sample(range(senders), rng.randint(1, senders)):
            lines = [sender_line(rng, sender, rng.randrange(25)) for _ in range(rng.randint(1, 30))]
            current = int(now // window) * window
            stamp = str(current - rng.choice((0, 0, window)) + rng.randrange(window))
            lines = [line.replace("{stamp}", stamp) for line in lines]
            now += 0.001  # each sender's batch arrives at its own time
            split.send(sender, lines, now)
        assert_same(split.merged, split.reported, f"seed {seed} step {step}")
    split.close(now + window + 3, everything=True)
    assert_same(split.merged, split.reported, f"seed {seed} at the end")
    assert split.merger.pending == 0


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize(
    ("window", "ttl"),
    [pytest.param(60, 10**7, id="w60"), pytest.param(10, 20, id="w10-ttl20")],
)
@pytest.mark.parametrize("seed", range(4))
def test_merged_windows_equal_one_aggregator(
    seed: int, workers: int, window: int, ttl: float
) -> None:
    play(seed, workers, window, ttl, steps=40)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), workers=st.integers(2, 4), ttl=st.sampled_from([20, 30, 10**7]))
def test_merge_property(seed: int, workers: int, ttl: float) -> None:
    play(seed, workers, 10, ttl, steps=15)


def part(
    keys: list[str], kinds: list[Kind], counts: list[float], last_at: list[float]
) -> WindowSnapshot:
    n = len(keys)
    values = np.arange(1.0, n + 1)
    return WindowSnapshot.of_rows(
        start=0,
        keys=[(key, ()) for key in keys],
        kinds=np.array(kinds, dtype=np.int8),
        sum=values * np.array(counts),
        count=np.array(counts, dtype=np.float64),
        min=values,
        max=values,
        last=values,
        last_at=np.array(last_at, dtype=np.float64),
        distinct=np.zeros(n, dtype=np.int64),
        members={},
        held_keys=[],
        held_values=np.zeros(0),
    )


def test_a_type_conflict_between_workers_keeps_the_type_with_more_samples() -> None:
    a = part(["x", "y"], [Kind.COUNTER, Kind.TIMER], [5, 1], [1.0, 1.0])
    b = part(["x", "y"], [Kind.GAUGE, Kind.COUNTER], [2, 3], [2.0, 2.0])
    merged = merge(0, [a, b])
    kinds = dict(zip(merged.snapshot.keys, merged.snapshot.kinds.tolist(), strict=True))
    assert kinds == {("x", ()): Kind.COUNTER, ("y", ()): Kind.COUNTER}
    assert merged.conflicts == 2 + 1  # b's 2 gauge samples of x, a's 1 timer sample of y


def test_the_last_value_is_the_one_that_arrived_last() -> None:
    early = part(["x"], [Kind.GAUGE], [1], [5.0])
    late = part(["x", "z"], [Kind.GAUGE, Kind.GAUGE], [1, 1], [7.0, 7.0])
    late.by_slot.last[0] = 42.0  # row 0 is slot 0
    for parts in ([early, late], [late, early]):
        snapshot = merge(0, parts).snapshot
        assert snapshot.last[snapshot.keys.index(("x", ()))] == 42.0


def test_a_part_that_comes_after_its_window_was_merged_is_counted_as_late() -> None:
    merger = Merger(length=60, gauge_ttl=3600, first_start=0)
    merger.add(part(["x"], [Kind.COUNTER], [2], [1.0]))
    [merged] = merger.merge_before(60)
    assert merged.snapshot.keys == [("x", ())]
    merger.add(part(["y", "z"], [Kind.COUNTER, Kind.TIMER], [3, 4], [2.0, 2.0]))
    assert merger.merge_before(60) == []
    assert merger.take_late() == 7
    assert merger.take_late() == 0
    assert merger.pending == 0
