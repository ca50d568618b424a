"""--max-series: new series past the budget are refused and counted; idle series are evicted."""

from __future__ import annotations

import asyncio
import functools
import re
import time

import httpx
import pytest

from gateway import window_state
from gateway.aggregator import EVICT_SLICE, Aggregator
from gateway.encoder import in_slices
from gateway.parser import Parser
from gateway.series import SeriesNamer
from tests.clocks import FakeClock
from tests.processes import start_gateway
from tests.test_end_to_end import _metric

W = 60
T0 = 1_800_000_000 // W * W


def _parse(text: str):  # type: ignore[no-untyped-def]
    return Parser(SeriesNamer((("host", "h"),))).parse([text.encode()])


def _metrics_of(snapshots) -> set[str]:  # type: ignore[no-untyped-def]
    return {key[0] for s in snapshots for key, _, _ in s.rows()}


def test_new_series_past_the_budget_are_refused_and_counted() -> None:
    agg = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0, max_series=3)
    result = agg.add(_parse("a.1:1|c\nb.1:1|c\na.2:1|c\na.3:1|c\nb.2:1|c\nb.2:5|c"), T0)
    assert result.over_budget == 3 and result.new_series == 3
    assert agg.add(_parse("a.1:1|c\nb.1:2|c"), T0 + 1).over_budget == 0  # known series go on
    created, refused = agg.take_tallies()
    assert created == {"a": 2, "b": 1} and refused == {"a": 1, "b": 2}
    assert _metrics_of(agg.close(T0 + W + 2)) == {"a.1", "b.1", "a.2"}


def test_idle_series_are_evicted_and_their_slots_reused() -> None:
    agg = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0, max_series=1000)
    for k in range(50):  # a new set of 1,000 series every window
        now = T0 + k * W
        batch = "\n".join(f"churn.w{k}.s{i}:1|c" for i in range(1000))
        assert agg.add(_parse(batch), now + 1).over_budget == 0
        agg.close(now + W + 2)
    assert agg.series == 0  # everything went idle and was evicted
    assert agg.slots <= 1000  # 50,000 series seen, never more than 1,000 rows


def test_a_returning_series_never_lands_in_the_slot_its_successor_took() -> None:
    # One parser throughout, as in the gateway: its key ids outlive the aggregator's slots.
    parser = Parser(SeriesNamer((("host", "h"),)))
    agg = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0)
    agg.add(parser.parse([b"first:1|c"]), T0 + 1)
    agg.close(T0 + W + 2)  # "first" goes idle and gives up its slot
    agg.add(parser.parse([b"second:2|c"]), T0 + W + 3)  # takes that slot
    agg.add(parser.parse([b"first:10|c"]), T0 + W + 4)
    (snapshot,) = agg.close(T0 + 2 * W + 2)
    sums = {key[0]: stats[1] for key, _, stats in snapshot.rows()}
    assert sums == {"first": 10.0, "second": 2.0}


def test_held_gauges_keep_their_slot_until_their_ttl() -> None:
    agg = Aggregator(window=W, grace=2, gauge_ttl=2 * W, now=T0, max_series=1)
    agg.add(_parse("g:5|g"), T0 + 1)
    agg.close(T0 + W + 2)
    assert agg.add(_parse("other:1|c"), T0 + W + 3).over_budget == 1  # the gauge is held
    agg.close(T0 + 2 * W + 2)  # the gauge's last held window
    assert agg.add(_parse("other:1|c"), T0 + 2 * W + 3).over_budget == 0


def test_free_slots_survive_a_save_and_restore() -> None:
    agg = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0, max_series=10)
    agg.add(_parse("old.a:1|c\nold.b:1|c"), T0 + 1)
    agg.close(T0 + W + 2)  # both idle now: evicted, slots free
    agg.add(_parse("new.a:2|c"), T0 + W + 3)
    saved = window_state.load(window_state.dump(agg.export_state()))
    assert saved.keys.count(None) == 1
    again = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0 + W + 4, max_series=10)
    again.restore_state(saved, T0 + W + 4)
    again.add(_parse("new.a:3|c\nnew.b:1|c"), T0 + W + 5)
    rows = {key[0]: stats for s in again.close(T0 + 2 * W + 2) for key, _, stats in s.rows()}
    assert rows["new.a"][1] == 5 and rows["new.b"][1] == 1


@pytest.mark.slow
def test_the_gateway_names_the_prefixes_over_the_budget() -> None:
    gw = start_gateway("stdout", "--window", "1", "--max-series", "2")
    try:
        gw.send(b"ok.a:1|c\nok.b:1|c\nflood.x1:1|c\nflood.x2:1|c\nflood.x3:1|c")
        gw.wait_for(
            re.compile(r"series limit reached max_series=2: samples of new series refused=3")
        )
        deadline = time.monotonic() + 5
        text = ""
        while (
            time.monotonic() < deadline and 'series_refused_by_prefix{prefix="flood"}' not in text
        ):
            text = httpx.get(f"http://127.0.0.1:{gw.http[1]}/metrics", timeout=5).text  # type: ignore[index]
    finally:
        assert gw.stop() == 0
    assert _metric(text, 'statsd_gateway_samples_dropped_total{reason="series_limit"}') == 3
    assert _metric(text, 'statsd_gateway_series_refused_by_prefix{prefix="flood"}') == 3
    assert {p["metric"] for p in gw.points()} == {"ok.a", "ok.b"}


def test_the_last_free_slots_go_to_the_series_that_arrived_first() -> None:
    parser = Parser(SeriesNamer((("host", "h"),)))
    agg = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0, max_series=1)
    agg.add(parser.parse([b"b:1|c"]), T0 + 1)
    agg.close(T0 + W + 2)  # b is evicted, but the parser still knows its key (a lower id)
    result = agg.add(parser.parse([b"c:1|c\nb:1|c"]), T0 + W + 3)
    assert (result.new_series, result.over_budget) == (1, 1)
    assert _metrics_of(agg.close(T0 + 2 * W + 2)) == {"c"}


def test_idle_series_wait_for_evict_idle_past_the_close_limit() -> None:
    agg = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0, evict_at_close=2)
    agg.add(_parse("\n".join(f"idle.{i}:1|c" for i in range(5))), T0 + 1)
    agg.close(T0 + W + 2)
    assert agg.series == 3  # two evicted at the close, three waiting
    assert agg.evict_idle(2) is True and agg.series == 1
    assert agg.evict_idle(2) is False and agg.series == 0
    assert agg.evict_idle(2) is False


def test_a_series_that_comes_back_before_its_eviction_keeps_its_slot() -> None:
    agg = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0, evict_at_close=0)
    agg.add(_parse("back:1|c\ngone:1|c\nheld:7|g"), T0 + 1)
    agg.close(T0 + W + 2)
    assert agg.series == 3  # back and gone wait; the gauge is held, not idle
    agg.add(_parse("back:4|c"), T0 + W + 3)
    assert agg.evict_idle() is False
    assert agg.series == 2  # only gone was evicted
    agg.add(_parse("new:2|c"), T0 + W + 4)  # may take gone's slot, never back's
    (snapshot,) = agg.close(T0 + 2 * W + 2)
    rows = {key[0]: (stats[1], stats[5]) for key, _, stats in snapshot.rows()}
    assert rows == {"back": (4.0, 1.0), "new": (2.0, 1.0), "held": (None, 0.0)}


def test_a_full_budget_evicts_waiting_idle_series_before_refusing_new_ones() -> None:
    # One parser throughout, as in the gateway: b's key id stays mapped to its slot.
    parser = Parser(SeriesNamer((("host", "h"),)))
    agg = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0, max_series=3, evict_at_close=0)
    agg.add(parser.parse([b"a:1|c\nb:1|c\nc:1|c"]), T0 + 1)
    agg.close(T0 + W + 2)  # all three idle, none evicted yet: the budget is full
    result = agg.add(parser.parse([b"x:1|c\ny:1|c\nb:5|c"]), T0 + W + 3)
    assert (result.new_series, result.over_budget) == (3, 0)
    (snapshot,) = agg.close(T0 + 2 * W + 2)
    assert {key[0]: stats[1] for key, _, stats in snapshot.rows()} == {"x": 1, "y": 1, "b": 5}


def test_the_gateway_evicts_idle_series_a_slice_at_a_time_with_turns_for_intake() -> None:
    """As ``gateway.app`` does after each close: one slice at the close, then one per turn."""
    agg = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0, evict_at_close=EVICT_SLICE)
    n = 2 * EVICT_SLICE + 100
    agg.add(_parse("\n".join(f"churn.{i}:1|c" for i in range(n))), T0 + 1)
    agg.close(T0 + W + 2)
    assert agg.series == n - EVICT_SLICE
    waiting_at_each_turn: list[int] = []

    async def turn(spent: float) -> None:
        assert spent >= 0
        waiting_at_each_turn.append(agg.series)

    asyncio.run(in_slices(functools.partial(agg.evict_idle, EVICT_SLICE), FakeClock(), turn))
    assert waiting_at_each_turn == [100] and agg.series == 0


def test_idle_series_saved_with_the_state_give_way_to_new_ones_after_a_restore() -> None:
    agg = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0, max_series=4, evict_at_close=0)
    agg.add(_parse("a:1|c\nb:1|c\nc:1|c"), T0 + 1)
    agg.add(_parse("live:1|c"), T0 + W + 1)
    agg.close(T0 + W + 2)  # a, b, c idle and waiting; live is in the open window
    saved = window_state.load(window_state.dump(agg.export_state()))
    again = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0 + W + 4, max_series=4)
    again.restore_state(saved, T0 + W + 4)
    result = again.add(_parse("x:1|c\ny:1|c\nz:1|c"), T0 + W + 5)
    assert (result.new_series, result.over_budget) == (3, 0)
    rows = {key[0]: stats[1] for s in again.close(T0 + 2 * W + 2) for key, _, stats in s.rows()}
    assert rows == {"live": 1, "x": 1, "y": 1, "z": 1}
