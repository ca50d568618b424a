"""Hand-computed tables for gateway.aggregator (CONTRACT 3 and 4), with explicit time.

Each case is a list of steps at times relative to ``B``, a window start (``W`` = 60 s, grace
2 s): ``add`` parses StatsD text and adds it, ``close`` and ``close_all`` close windows.  The
expected result is every non-empty snapshot the steps produced, oldest first, as
``{series key: (kind, (avg, sum, last, max, min, count))}``, plus the late and conflict totals.
"""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import pytest

from gateway.aggregator import Aggregator
from gateway.parser import NO_TIMESTAMP, ParsedBatch, Parser
from gateway.protocol import Kind
from gateway.series import SeriesNamer
from gateway.window import ROWS_AT_ONCE

W = 60
GRACE = 2
B = 1_700_000_040  # a window start: B % W == 0
HOST = (("host", "h"),)
C, G, T, S = Kind.COUNTER, Kind.GAUGE, Kind.TIMER, Kind.SET

Stats = tuple[float, float | None, float, float, float, float]
Rows = dict[object, tuple[Kind, Stats]]
Step = tuple[Any, ...]


STAT_NAMES = ("avg", "sum", "last", "max", "min", "count")


def key(metric: str, *tags: tuple[str, str]) -> object:
    return (metric, (*HOST, *tags))


def num(total: float, count: float, last: float, high: float, low: float) -> Stats:
    """Counter or timer row from its weighted sum and count and raw last/max/min."""
    return (total / count, total, last, high, low, count)


def gauge(avg: float, last: float, high: float, low: float, count: int) -> Stats:
    return (avg, None, last, high, low, float(count))


def held(value: float) -> Stats:
    return (value, None, value, value, value, 0.0)


def distinct(n: int) -> Stats:
    return (float(n),) * 6


def add(t: float, *lines: str) -> Step:
    return ("add", t, lines)


def close(t: float) -> Step:
    return ("close", t)


def close_all(t: float) -> Step:
    return ("close_all", t)


def parse(lines: tuple[str, ...]) -> Any:
    return Parser(SeriesNamer(HOST)).parse(["\n".join(lines).encode()])


def run(steps: list[Step], ttl: float) -> tuple[list[tuple[int, Rows]], int, int]:
    """Play the steps; return the non-empty snapshots (start relative to B), late, conflicts."""
    agg = Aggregator(window=W, grace=GRACE, gauge_ttl=ttl, now=B)
    snapshots: list[tuple[int, Rows]] = []
    late = conflicts = 0
    for step in steps:
        if step[0] == "add":
            result = agg.add(parse(step[2]), B + step[1])
            late += result.late
            conflicts += result.conflicts
            continue
        closed = agg.close(B + step[1]) if step[0] == "close" else agg.close_all(B + step[1])
        for snapshot in closed:
            rows: Rows = {}
            for series, kind, stats in snapshot.rows():
                assert series not in rows, f"two rows for {series} in window {snapshot.start}"
                rows[series] = (kind, stats)
            if rows:
                snapshots.append((snapshot.start - B, rows))
    return snapshots, late, conflicts


def assert_same(got: list[tuple[int, Rows]], expected: list[tuple[int, Rows]]) -> None:
    assert [start for start, _ in got] == [start for start, _ in expected]
    for (start, rows), (_, want) in zip(got, expected, strict=True):
        assert rows.keys() == want.keys(), f"window {start}"
        for series, (kind, stats) in want.items():
            got_kind, got_stats = rows[series]
            assert got_kind is kind, f"window {start} {series}"
            for name, a, b in zip(STAT_NAMES, got_stats, stats, strict=True):
                if b is None:
                    assert a is None, f"window {start} {series} {name}"
                else:
                    assert a == pytest.approx(b, rel=1e-12), f"window {start} {series} {name}"


def case(
    steps: list[Step],
    expected: list[tuple[int, Rows]],
    late_conflicts: tuple[int, int],
    *,
    id: str,
    ttl: float = 3600,
) -> Any:
    return pytest.param(steps, expected, late_conflicts, ttl, id=id)


CASES = [
    # --- counters and timers --------------------------------------------------------------
    case(
        [add(1, "c:2|c", "c:3|c|@0.5", "c:-1|c|@0.25"), close(62)],
        [(0, {key("c"): (C, num(2 + 6 - 4, 1 + 2 + 4, -1, 3, -1))})],
        (0, 0),
        id="counter-weighted-sum-raw-extremes",
    ),
    case(
        [add(1, "c:10|c|@0.1"), close(62)],
        [(0, {key("c"): (C, num(100, 10, 10, 10, 10))})],
        (0, 0),
        id="counter-rate-last-is-raw",
    ),
    case(
        [add(1, "t:10|ms", "t:20|h|@0.5", "t:5|d"), close(62)],
        [(0, {key("t"): (T, num(10 + 40 + 5, 1 + 2 + 1, 5, 20, 5))})],
        (0, 0),
        id="timer-h-d-one-type-weighted",
    ),
    case(
        [add(1, "t:1:2:3|ms|@0.5"), close(62)],
        [(0, {key("t"): (T, num(12, 6, 3, 3, 1))})],
        (0, 0),
        id="timer-packed-values",
    ),
    case(
        [add(1, "c:1|c|#env:prod", "c:2|c|#env:dev", "c,env=prod:3|c", "c:4|c"), close(62)],
        [
            (
                0,
                {
                    key("c", ("env", "prod")): (C, num(4, 2, 3, 3, 1)),
                    key("c", ("env", "dev")): (C, num(2, 1, 2, 2, 2)),
                    key("c"): (C, num(4, 1, 4, 4, 4)),
                },
            )
        ],
        (0, 0),
        id="tags-make-separate-series",
    ),
    # --- gauges ---------------------------------------------------------------------------
    case(
        [add(1, "g:5:+2:-1|g"), close(62)],
        [(0, {key("g"): (G, gauge(6, 6, 7, 5, 3))})],
        (0, 0),
        id="gauge-set-then-deltas-in-order",
    ),
    case(
        [add(1, "g:-3|g", "g:+1|g"), close(62)],
        [(0, {key("g"): (G, gauge(-2.5, -2, -2, -3, 2))})],
        (0, 0),
        id="gauge-never-seen-starts-at-zero",
    ),
    case(
        [add(1, "g:4|g|@0.1", "g:+1|g|@0.5"), close(62)],
        [(0, {key("g"): (G, gauge(4.5, 5, 5, 4, 2))})],
        (0, 0),
        id="gauge-ignores-rate",
    ),
    case(
        [add(1, "g:5|g"), close(62), add(70, "g:+1|g"), close(122)],
        [(0, {key("g"): (G, gauge(5, 5, 5, 5, 1))}), (60, {key("g"): (G, gauge(6, 6, 6, 6, 1))})],
        (0, 0),
        id="gauge-value-persists-across-windows",
    ),
    case(
        [add(1, "g:5|g"), close(62), close(122), add(130, "g:2|g", "g:+1|g"), close(182)],
        [
            (0, {key("g"): (G, gauge(5, 5, 5, 5, 1))}),
            (60, {key("g"): (G, held(5))}),
            (120, {key("g"): (G, gauge(2.5, 3, 3, 2, 2))}),
        ],
        (0, 0),
        id="gauge-held-between-updates-then-set",
    ),
    case(
        [add(61, "g:10|g", f"g:+1|g|T{B + 30}"), close(62), close(122)],
        [
            (0, {key("g"): (G, gauge(11, 11, 11, 11, 1))}),
            (60, {key("g"): (G, gauge(10, 10, 10, 10, 1))}),
        ],
        (0, 0),
        id="gauge-deltas-in-arrival-order-across-windows",
    ),
    case(
        [add(1, "g:5|g"), close(362)],
        [
            (0, {key("g"): (G, gauge(5, 5, 5, 5, 1))}),
            (60, {key("g"): (G, held(5))}),
            (120, {key("g"): (G, held(5))}),
        ],
        (0, 0),
        id="gauge-held-while-window-start-within-ttl",
        ttl=180,
    ),
    case(
        [add(1, "g:5|g"), close(362)],
        [(0, {key("g"): (G, gauge(5, 5, 5, 5, 1))}), (60, {key("g"): (G, held(5))})],
        (0, 0),
        id="gauge-held-ttl-not-a-multiple-of-window",
        ttl=90,
    ),
    case(
        [add(1, "g:5|g"), close(190), add(190, "g:+1|g"), close(242)],
        [
            (0, {key("g"): (G, gauge(5, 5, 5, 5, 1))}),
            (60, {key("g"): (G, held(5))}),
            (180, {key("g"): (G, gauge(1, 1, 1, 1, 1))}),
        ],
        (0, 0),
        id="gauge-restarts-from-zero-after-ttl",
        ttl=120,
    ),
    case(
        # Window 120 is not held (120 - 0 >= ttl) and the last update was 169 s ago.
        [add(1, "g:5|g"), close(170), add(170, "g:+1|g"), close(182)],
        [
            (0, {key("g"): (G, gauge(5, 5, 5, 5, 1))}),
            (60, {key("g"): (G, held(5))}),
            (120, {key("g"): (G, gauge(1, 1, 1, 1, 1))}),
        ],
        (0, 0),
        id="gauge-expired-before-its-first-unheld-window-closes",
        ttl=120,
    ),
    # --- sets -----------------------------------------------------------------------------
    case(
        [add(1, "s:a|s", "s:b|s", "s:a|s|@0.5", "s:a:b|s"), close(62)],
        [(0, {key("s"): (S, distinct(3))})],
        (0, 0),
        id="set-distinct-members-colon-in-member",
    ),
    case(
        [add(1, "s:a|s", "s:b|s"), close(62), add(70, "s:a|s"), close(122)],
        [(0, {key("s"): (S, distinct(2))}), (60, {key("s"): (S, distinct(1))})],
        (0, 0),
        id="set-distinct-per-window",
    ),
    # --- type conflicts -------------------------------------------------------------------
    case(
        [add(1, "x:1|c", "x:5|g", "x:+1|g", "x:2|ms", "x:q|s"), close(62)],
        [(0, {key("x"): (C, num(1, 1, 1, 1, 1))})],
        (0, 4),
        id="conflict-counter-keeps-sums",
    ),
    case(
        [add(1, "g:5|g", "g:1|c", "g:2|ms", "g:z|s", "g:+1|g"), close(62)],
        [(0, {key("g"): (G, gauge(5.5, 6, 6, 5, 2))})],
        (0, 3),
        id="conflict-gauge-value-untouched",
    ),
    case(
        [add(1, "t:1|ms", "t:2|h", "t:3|d", "t:4|c"), close(62)],
        [(0, {key("t"): (T, num(6, 3, 3, 3, 1))})],
        (0, 1),
        id="conflict-ms-h-d-are-one-type",
    ),
    case(
        [add(1, "s:a|s", "s:1|c", "s:b|s"), close(62)],
        [(0, {key("s"): (S, distinct(2))})],
        (0, 1),
        id="conflict-set-then-counter",
    ),
    case(
        [add(1, "g:5|g"), close(62), close(122), add(130, "g:1|c", "g:+1|g"), close(182)],
        [
            (0, {key("g"): (G, gauge(5, 5, 5, 5, 1))}),
            (60, {key("g"): (G, held(5))}),
            (120, {key("g"): (G, gauge(6, 6, 6, 6, 1))}),
        ],
        (0, 1),
        id="conflict-held-gauge-stays-live",
    ),
    case(
        [add(1, "x:1|c"), close(62), add(70, "x:5|g"), close(122)],
        [(0, {key("x"): (C, num(1, 1, 1, 1, 1))}), (60, {key("x"): (G, gauge(5, 5, 5, 5, 1))})],
        (0, 0),
        id="type-free-after-its-window-closes",
    ),
    case(
        [add(1, "x:1|c"), add(61, "x:5|g"), close(62), add(63, "x:7|g"), close(122)],
        [(0, {key("x"): (C, num(1, 1, 1, 1, 1))}), (60, {key("x"): (G, gauge(7, 7, 7, 7, 1))})],
        (0, 1),
        id="type-kept-during-grace",
    ),
    case(
        [add(1, "x:1|c"), add(61, "x:2|c"), close(62), add(63, "x:5|g"), close(122)],
        [(0, {key("x"): (C, num(1, 1, 1, 1, 1))}), (60, {key("x"): (C, num(2, 1, 2, 2, 2))})],
        (0, 1),
        id="type-kept-while-samples-in-open-window",
    ),
    case(
        [add(1, "g:5|g"), close(190), add(190, "g:1|c", "g:+1|g"), close(242)],
        [
            (0, {key("g"): (G, gauge(5, 5, 5, 5, 1))}),
            (60, {key("g"): (G, held(5))}),
            (180, {key("g"): (C, num(1, 1, 1, 1, 1))}),
        ],
        (0, 1),
        id="gauge-type-free-after-ttl",
        ttl=120,
    ),
    case(
        [add(1, "g:5|g"), close(170), add(170, "g:1|c"), close(182)],
        [
            (0, {key("g"): (G, gauge(5, 5, 5, 5, 1))}),
            (60, {key("g"): (G, held(5))}),
            (120, {key("g"): (C, num(1, 1, 1, 1, 1))}),
        ],
        (0, 0),
        id="gauge-type-free-before-its-first-unheld-window-closes",
        ttl=120,
    ),
    # --- windows, |T and late samples -----------------------------------------------------
    case(
        [add(1, "c:1|c"), add(61, "c:10|c"), close(62), close(122)],
        [(0, {key("c"): (C, num(1, 1, 1, 1, 1))}), (60, {key("c"): (C, num(10, 1, 10, 10, 10))})],
        (0, 0),
        id="grace-arrivals-go-to-new-window",
    ),
    case(
        [add(61, f"x:1|c|T{B + 10}", "x:2|c", f"x:4|c|T{B + 60}"), close(62), close(122)],
        [(0, {key("x"): (C, num(1, 1, 1, 1, 1))}), (60, {key("x"): (C, num(6, 2, 4, 4, 2))})],
        (0, 0),
        id="stamp-previous-during-grace-and-current",
    ),
    case(
        [add(1, "x:1|c"), close(62), add(63, f"x:5|c|T{B + 10}")],
        [(0, {key("x"): (C, num(1, 1, 1, 1, 1))})],
        (1, 0),
        id="stamp-previous-after-close-is-late",
    ),
    case(
        [add(62, f"x:5|c|T{B + 10}"), close(62)],
        [],
        (1, 0),
        id="stamp-previous-past-grace-before-close-is-late",
    ),
    case(
        [add(61, f"x:1|c|T{B - 50}", f"x:1|g|T{B - 3600}"), close(200)],
        [],
        (2, 0),
        id="stamp-two-windows-old-is-late",
    ),
    case(
        [add(1, f"x:1|c|T{B + 1000}", f"x:2|c|T{B + 59}"), close(62)],
        [(0, {key("x"): (C, num(3, 2, 2, 2, 1))})],
        (0, 0),
        id="stamp-future-goes-to-current",
    ),
    case(
        [add(1, "x:1|c|T99999999999999999999"), close(62)],
        [(0, {key("x"): (C, num(1, 1, 1, 1, 1))})],
        (0, 0),
        id="stamp-huge-is-future",
    ),
    case(
        [add(1, "x:1|c|T0"), close(62)],
        [],
        (1, 0),
        id="stamp-zero-is-late",
    ),
    case(
        [add(1, "a:1|c"), close(61.999)],
        [],
        (0, 0),
        id="not-closed-before-grace-ends",
    ),
    case(
        [add(1, "a:1|c"), add(61, "a:2|c"), add(121, "a:3|c"), close(1000)],
        [
            (0, {key("a"): (C, num(1, 1, 1, 1, 1))}),
            (60, {key("a"): (C, num(2, 1, 2, 2, 2))}),
            (120, {key("a"): (C, num(3, 1, 3, 3, 3))}),
        ],
        (0, 0),
        id="closes-oldest-first",
    ),
    case(
        [add(1, "c:1|c"), close(62), close(600), add(601, "c:2|c"), close(662)],
        [(0, {key("c"): (C, num(1, 1, 1, 1, 1))}), (600, {key("c"): (C, num(2, 1, 2, 2, 2))})],
        (0, 0),
        id="windows-without-samples-report-nothing",
    ),
    # --- shutdown -------------------------------------------------------------------------
    case(
        [add(1, "g:5|g", "c:1|c"), close(62), add(70, "c:2|c"), close_all(75)],
        [
            (0, {key("g"): (G, gauge(5, 5, 5, 5, 1)), key("c"): (C, num(1, 1, 1, 1, 1))}),
            (60, {key("g"): (G, held(5)), key("c"): (C, num(2, 1, 2, 2, 2))}),
        ],
        (0, 0),
        id="close-all-partial-window-with-held-gauge",
    ),
    case(
        [add(1, "c:1|c"), add(61, "c:2|c"), close_all(61.5)],
        [(0, {key("c"): (C, num(1, 1, 1, 1, 1))}), (60, {key("c"): (C, num(2, 1, 2, 2, 2))})],
        (0, 0),
        id="close-all-during-grace",
    ),
    case(
        [add(1, "g:5|g"), close(62), close_all(130)],
        [
            (0, {key("g"): (G, gauge(5, 5, 5, 5, 1))}),
            (60, {key("g"): (G, held(5))}),
            (120, {key("g"): (G, held(5))}),
        ],
        (0, 0),
        id="close-all-held-gauges-only",
    ),
]


@pytest.mark.parametrize(("steps", "expected", "late_conflicts", "ttl"), CASES)
def test_aggregation(
    steps: list[Step], expected: list[tuple[int, Rows]], late_conflicts: tuple[int, int], ttl: float
) -> None:
    got, late, conflicts = run(steps, ttl)
    assert_same(got, expected)
    assert (late, conflicts) == late_conflicts


def test_add_result_counts_samples_by_type() -> None:
    agg = Aggregator(window=W, grace=GRACE, gauge_ttl=3600, now=B)
    lines = ("c:1|c", "t:1|ms", "t:2|h", "g:1|g", "g:+1|g", "s:a|s", "c:1|g", f"o:1|c|T{B - 600}")
    result = agg.add(parse(lines), B + 1)
    assert result.samples == {C: 1, T: 2, G: 2, S: 1}
    assert (result.late, result.conflicts) == (1, 1)


def test_a_window_larger_than_one_slice_of_rows_reports_every_series() -> None:
    agg = Aggregator(window=W, grace=GRACE, gauge_ttl=3600, now=B)
    n = 2 * ROWS_AT_ONCE + 7
    agg.add(parse((*(f"c{i}:{i}|c" for i in range(n)), "g:5|g", "s:x|s")), B + 1)
    (snapshot,) = agg.close(B + W + GRACE)
    rows = {key[0]: (kind, stats) for key, kind, stats in snapshot.rows()}
    assert len(rows) == n + 2
    assert all(rows[f"c{i}"] == (C, num(i, 1, i, i, i)) for i in range(n))
    assert rows["g"] == (G, gauge(5, 5, 5, 5, 1)) and rows["s"] == (S, distinct(1))


def test_a_snapshot_keeps_its_rows_while_new_series_take_their_slots() -> None:
    """A snapshot gathers its rows when it is encoded, after the close; meanwhile series
    that went idle at the close have given their slots to new series of other types."""
    agg = Aggregator(window=W, grace=GRACE, gauge_ttl=3600, now=B)
    agg.add(parse(("a:3|c", "b:7|ms", "keep:1|c")), B + 1)
    agg.add(parse(("keep:2|c",)), B + W + 1)  # live in the next window: keeps its slot
    (snapshot,) = agg.close(B + W + GRACE)
    agg.add(parse(("x:9|g", "y:u|s")), B + W + 3)
    assert agg.slots == 3, "x and y reuse the slots of a and b"
    expected = {
        key("a"): (C, num(3, 1, 3, 3, 3)),
        key("b"): (T, num(7, 1, 7, 7, 7)),
        key("keep"): (C, num(1, 1, 1, 1, 1)),
    }
    for copy in (snapshot, pickle.loads(pickle.dumps(snapshot))):
        assert {k: (kind, stats) for k, kind, stats in copy.rows()} == expected


@pytest.mark.parametrize(
    ("start_offset", "closes", "expected"),
    [
        pytest.param(5, [], B + 62, id="first-window"),
        pytest.param(0, [62], B + 122, id="after-a-close"),
        pytest.param(0, [61.9], B + 62, id="close-too-early"),
    ],
)
def test_next_close_time(start_offset: float, closes: list[float], expected: float) -> None:
    agg = Aggregator(window=W, grace=GRACE, gauge_ttl=3600, now=B + start_offset)
    agg.add(parse(("c:1|c",)), B + start_offset)
    for t in closes:
        agg.close(B + t)
    assert agg.next_close_time() == expected


def test_batches_from_different_key_tables_never_share_a_mapping() -> None:
    agg = Aggregator(window=W, grace=GRACE, gauge_ttl=3600, now=B)
    for name in ("a", "z"):  # two tables, each with its series at id 0
        batch = ParsedBatch(
            key_ids=np.zeros(1, dtype=np.intp),
            ops=np.zeros(1, dtype=np.int8),
            values=np.ones(1),
            weights=np.ones(1),
            timestamps=np.full(1, NO_TIMESTAMP, dtype=np.int64),
            key_table=[(name, HOST)],
        )
        agg.add(batch, B + 1)
    (snapshot,) = agg.close(B + W + GRACE)
    assert sorted(key[0] for key, _, _ in snapshot.rows()) == ["a", "z"]


def test_set_members_are_grouped_by_row_when_read_and_survive_pickling() -> None:
    """A snapshot counts each set row's members at the close and groups them only when
    read (merging workers' windows); rows of other types sit between the set rows."""
    agg = Aggregator(window=W, grace=GRACE, gauge_ttl=3600, now=B)
    agg.add(parse(("next:1|c",)), B + W + 1)  # slot 0, in the next window: rows != slots
    lines = ("c:1|c", "s1:a|s", "g:1|g", "s2:x|s", "s1:b|s", "s1:a|s", "s2:y|s", "s2:z|s")
    agg.add(parse(lines), B + 1)
    (snapshot,) = agg.close(B + W + GRACE)
    row = {key[0]: i for i, key in enumerate(snapshot.keys)}
    expected = {row["s1"]: {b"a", b"b"}, row["s2"]: {b"x", b"y", b"z"}}
    by_row = dict(zip(snapshot.keys, snapshot.distinct.tolist(), strict=True))
    assert {key[0]: n for key, n in by_row.items()} == {"c": 0, "s1": 2, "g": 0, "s2": 3}
    copied = pickle.loads(pickle.dumps(snapshot))  # as a worker sends it, before grouping
    assert snapshot.members == expected
    assert copied.members == expected
    assert len(snapshot.members) == 2 and sorted(snapshot.members) == sorted(expected)
