"""Random workloads: gateway.aggregator (numpy) against tests/reference.py (plain Python).

Both get the same StatsD lines in the same batches at the same times, and the same close and
shutdown calls; every non-empty snapshot must match: same windows in the same order, the same
series with the same kind in each, and each statistic equal within 1e-9 relative (``sum``
None for gauges on both sides).  The per-batch sample, late and conflict counts must match too.

Workloads mix many series (with DogStatsD and Influx tags), every type, sample rates, packed
values, gauge deltas, set members, ``|T`` stamps (current, previous, late and future), type
conflicts, arrivals spread over several windows with closes in between (some of them a little
late), batches of thousands of samples on a few series, and a final ``close_all``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from reference import ReferenceAggregator, RefSnapshot, samples_of

from gateway.aggregator import Aggregator
from gateway.parser import Parser
from gateway.protocol import Kind
from gateway.series import SeriesNamer
from gateway.window import Stats, WindowSnapshot

B = 1_700_000_040 - 600  # divisible by 60 and by 10
HOST = (("host", "h"),)
TYPES = ("c", "ms", "h", "d", "g", "s")
TAGS = ("", "|#env:prod", "|#env:dev,role:web", "|#role:db")
MEMBERS = ("a", "b", "c", "d", "e", "x:y", "10")
VALUES = ("1", "2", "0", "-3", "2.5", ".5", "1e2", "-1.25e1", "7", "1000", "0.001")
RATES = ("", "", "", "|@0.5", "|@0.25", "|@0.1", "|@1")


@dataclass(frozen=True, slots=True)
class Config:
    window: int
    grace: float
    ttl: float
    evict: int | None = None
    """Idle series evicted at the close, at most, and before each batch (None: all at the
    close): eviction spread over later batches, as the gateway does it."""


LONG_TTL = 10**7


STAT_NAMES = ("avg", "sum", "last", "max", "min", "count")


def line(
    rng: random.Random, metric: int, home: str, window: int, now: float, stamp: str | None
) -> str:
    """One StatsD line for series ``metric``; usually of its home type, sometimes not."""
    kind = home if rng.random() < 0.9 else rng.choice(TYPES)
    tags = rng.choice(TAGS)
    name = f"m{metric}"
    if tags == "|#env:prod" and rng.random() < 0.5:
        name, tags = f"m{metric},env=prod", ""  # the same series, spelled as an Influx name tag
    if kind == "s":
        value = rng.choice(MEMBERS)
    elif kind == "g":
        value = ":".join(
            rng.choice(("", "+", "-")) + rng.choice(VALUES).lstrip("-")
            for _ in range(rng.choice((1, 1, 1, 2, 3)))
        )
    else:
        value = ":".join(rng.choice(VALUES) for _ in range(rng.choice((1, 1, 1, 2, 3))))
    stamp_field = ""
    if stamp is None and rng.random() < 0.15:
        stamp = rng.choice(("current", "previous", "previous", "old", "future"))
    if stamp is not None:
        current = int(now // window) * window
        offset = {"current": 0, "previous": -window, "old": -window * rng.randint(2, 5)}
        start = offset.get(stamp, window * rng.randint(1, 5)) + current
        stamp_field = f"|T{start + rng.randrange(window)}"
    return f"{name}:{value}|{kind}{rng.choice(RATES)}{tags}{stamp_field}"


def homes(rng: random.Random, n: int) -> list[str]:
    return [rng.choice(TYPES) for _ in range(n)]


def datagrams(rng: random.Random, lines: Sequence[str]) -> list[bytes]:
    """Pack lines into datagrams of random size."""
    out: list[bytes] = []
    i = 0
    while i < len(lines):
        n = rng.randint(1, 20)
        out.append("\n".join(lines[i : i + n]).encode())
        i += n
    return out


class Pair:
    """The aggregator and the reference, driven in lockstep and compared at every step."""

    def __init__(self, config: Config, now: float, *, cache_size: int = 262_144) -> None:
        namer = SeriesNamer(HOST)
        self.parser = Parser(namer, cache_size=cache_size)
        self.agg = Aggregator(
            window=config.window,
            grace=config.grace,
            gauge_ttl=config.ttl,
            now=now,
            evict_at_close=config.evict,
        )
        self.evict = config.evict
        self.ref = ReferenceAggregator(
            window=config.window, grace=config.grace, gauge_ttl=config.ttl, now=now, key=namer
        )
        self.step = 0
        self.closed = 0

    def add(self, grams: list[bytes], now: float) -> None:
        self.step += 1
        if self.evict is not None:
            self.agg.evict_idle(self.evict)
        got = self.agg.add(self.parser.parse(grams), now)
        want = self.ref.add(samples_of(grams), now)
        where = f"step {self.step} add at {now}"
        assert got.samples == want.samples, where
        assert (got.late, got.conflicts) == (want.late, want.conflicts), where

    def close(self, now: float) -> None:
        self.step += 1
        compare(self.agg.close(now), self.ref.close(now), f"step {self.step} close at {now}")

    def close_all(self, now: float) -> None:
        self.step += 1
        got, want = self.agg.close_all(now), self.ref.close_all(now)
        compare(got, want, f"step {self.step} close_all at {now}")


def compare(got: list[WindowSnapshot], want: list[RefSnapshot], where: str) -> None:
    tables = []
    for snapshot in got:
        rows: dict[object, tuple[Kind, Stats]] = {}
        for key, kind, stats in snapshot.rows():
            assert key not in rows, f"{where}: two rows for {key} in {snapshot.start}"
            rows[key] = (kind, stats)
        if rows:
            tables.append((snapshot.start, rows))
    assert [start for start, _ in tables] == [s.start for s in want], where
    for (start, rows), expected in zip(tables, want, strict=True):
        here = f"{where}, window {start}"
        assert rows.keys() == expected.rows.keys(), here
        for series, (kind, stats) in expected.rows.items():
            got_kind, got_stats = rows[series]
            assert got_kind is kind, f"{here} {series}: {got_kind!r} != {kind!r}"
            for name, a, b in zip(STAT_NAMES, got_stats, stats, strict=True):
                if b is None or a is None:
                    assert a is b, f"{here} {series} {name}: {a} != {b}"
                else:
                    ok = math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
                    assert ok, f"{here} {series} {name}: got {a}, reference {b}"


def play(
    seed: int, config: Config, *, steps: int, series: int, big: bool, cache_size: int = 262_144
) -> None:
    rng = random.Random(seed)
    w = config.window
    now = B + rng.uniform(0, w)
    pair = Pair(config, now, cache_size=cache_size)
    home = homes(rng, series)
    for _ in range(steps):
        now += rng.choice(
            (
                0.0,
                rng.uniform(0, config.grace + 0.5),
                rng.uniform(0, w / 4),
                rng.uniform(w / 2, w),
                float(w),
                rng.uniform(w, 3 * w),
                rng.uniform(3 * w, 8 * w) if rng.random() < 0.3 else 1.0,
            )
        )
        if rng.random() < 0.8:
            pair.close(now)
        else:
            pair.close(now - rng.uniform(0, w / 3))  # a close that comes a little late
        if big and rng.random() < 0.3:
            hot = rng.sample(range(series), 4)
            lines = [
                line(rng, m, home[m], w, now, None) for m in (rng.choice(hot) for _ in range(3000))
            ]
        else:
            picks = (rng.randrange(series) for _ in range(rng.randint(1, 60)))
            lines = [line(rng, m, home[m], w, now, None) for m in picks]
        pair.add(datagrams(rng, lines), now)
    pair.close(now + rng.uniform(0, w))
    pair.close_all(now + rng.uniform(w, 2 * w))


CONFIGS = [
    pytest.param(Config(60, 2, LONG_TTL), id="w60-g2"),
    pytest.param(Config(10, 3, LONG_TTL), id="w10-g3"),
    pytest.param(Config(10, 0, LONG_TTL), id="w10-no-grace"),
    pytest.param(Config(10, 2, 30), id="w10-ttl30"),
    pytest.param(Config(10, 2, 25), id="w10-ttl25"),
    pytest.param(Config(10, 2, 25, evict=1), id="w10-ttl25-evict-1-at-a-time"),
    pytest.param(Config(10, 3, LONG_TTL, evict=0), id="w10-g3-evict-none-at-close"),
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", range(6))
def test_random_workloads(config: Config, seed: int) -> None:
    play(seed, config, steps=40, series=30, big=False)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", range(3))
def test_random_workloads_parser_cache_rolling_over(config: Config, seed: int) -> None:
    """A parser cache of 4 templates: its key table is renumbered every few batches,
    while the aggregator evicts idle series and hands their slots to others."""
    play(2000 + seed, config, steps=40, series=30, big=False, cache_size=4)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("seed", range(2))
def test_large_batches(config: Config, seed: int) -> None:
    play(1000 + seed, config, steps=12, series=12, big=True)


# --- Hypothesis ---------------------------------------------------------------------------

LINE = st.tuples(
    st.integers(0, 7),  # series
    st.sampled_from(TYPES),
    st.sampled_from(VALUES),
    st.sampled_from(("", "+", "-")),  # gauge sign
    st.sampled_from(RATES),
    st.sampled_from(TAGS),
    st.sampled_from((None, None, None, "current", "previous", "old", "future")),
)
STEP = st.tuples(
    st.sampled_from((0.0, 0.5, 1.5, 2.5, 5.0, 9.0, 10.0, 12.0, 25.0, 60.0)),  # dt
    st.booleans(),  # close before adding
    st.lists(LINE, min_size=0, max_size=12),
)


def hypothesis_line(spec: tuple[int, str, str, str, str, str, str | None], now: float) -> str:
    metric, kind, value, sign, rate, tags, stamp = spec
    if kind == "s":
        value = MEMBERS[VALUES.index(value) % len(MEMBERS)]
    elif kind == "g":
        value = sign + value.lstrip("-")
    stamp_field = ""
    if stamp is not None:
        current = int(now // 10) * 10
        start = {"current": 0, "previous": -10, "old": -30, "future": 20}[stamp] + current
        stamp_field = f"|T{start + metric}"
    return f"m{metric}:{value}|{kind}{rate}{tags}{stamp_field}"


def play_steps(config: Config, steps: list[tuple[float, bool, list[tuple]]]) -> None:  # type: ignore[type-arg]
    now = B + 3.0
    pair = Pair(config, now)
    for dt, close_first, specs in steps:
        now += dt
        if close_first:
            pair.close(now)
        pair.add([hypothesis_line(spec, now).encode() for spec in specs], now)
    pair.close(now + 1)
    pair.close_all(now + 15)


QUICK = settings(
    max_examples=80,
    derandomize=True,
    deadline=None,
    phases=(Phase.explicit, Phase.generate, Phase.shrink),  # no slow "explain" phase
)


@QUICK
@given(st.lists(STEP, min_size=1, max_size=15))
def test_hypothesis_long_ttl(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    play_steps(Config(10, 2, LONG_TTL), steps)


@settings(QUICK, phases=(Phase.explicit, Phase.generate))  # shrinking here takes ~20 s
@given(st.lists(STEP, min_size=1, max_size=15))
def test_hypothesis_short_ttl(steps: list[tuple]) -> None:  # type: ignore[type-arg]
    play_steps(Config(10, 2, 20), steps)
