"""Saving and resuming the open windows (the restart half of CONTRACT 6), without processes."""

from __future__ import annotations

import io

import pytest

from gateway import window_state
from gateway.aggregator import Aggregator
from gateway.batches import Body
from gateway.parser import Parser
from gateway.policy import Action
from gateway.series import SeriesNamer
from gateway.sinks import StdoutSink

W = 60
T0 = 1_800_000_000 // W * W  # a window start


def _parse(text: bytes):  # type: ignore[no-untyped-def]
    return Parser(SeriesNamer((("host", "h"),))).parse([text])


def _rows(snapshots):  # type: ignore[no-untyped-def]
    return {(s.start, key[0]): stats for s in snapshots for key, _, stats in s.rows()}


def _saved(now: float) -> bytes:
    first = Aggregator(window=W, grace=2, gauge_ttl=3600, now=now)
    first.add(_parse(b"c:1|c\nc:3|c|@0.5\ng:5|g\ns:a|s\nt:4|ms"), now)
    return window_state.dump(first.export_state())


def test_resumed_within_the_window_reports_both_halves_once() -> None:
    second = Aggregator(window=W, grace=2, gauge_ttl=3600, now=T0 + 20)
    second.restore_state(window_state.load(_saved(T0 + 10)), T0 + 20)
    second.add(_parse(b"c:10|c\ns:b|s\ns:a|s\ng:+1|g"), T0 + 20)
    rows = _rows(second.close(T0 + W + 2))
    assert rows[(T0, "c")] == (17 / 4, 17, 10, 10, 1, 4)
    assert rows[(T0, "s")] == (2, 2, 2, 2, 2, 2)
    assert rows[(T0, "g")] == (5.5, None, 6, 6, 5, 2)
    assert rows[(T0, "t")] == (4, 4, 4, 4, 4, 1)


def test_resumed_later_reports_at_once_and_skips_the_gap() -> None:
    later = T0 + 10 * W + 5  # nine whole windows with no gateway running
    second = Aggregator(window=W, grace=2, gauge_ttl=3600, now=later)
    second.restore_state(window_state.load(_saved(T0 + 10)), later)
    snapshots = second.close(later)
    assert [s.start for s in snapshots] == [T0]  # the saved window, with its own timestamp
    assert _rows(snapshots)[(T0, "c")][1] == 7
    # The gauge is still live and held from the next window the new process runs in.
    assert [s.start for s in second.close(later + W)] == [T0 + 10 * W]


def test_another_window_length_is_refused() -> None:
    other = Aggregator(window=10, grace=2, gauge_ttl=3600, now=T0)
    with pytest.raises(ValueError, match="60 s long"):
        other.restore_state(window_state.load(_saved(T0 + 10)), T0)


@pytest.mark.parametrize(
    "data", [b"", b"not an archive", b"PK\x03\x04broken"], ids=["empty", "text", "zip"]
)
def test_unreadable_state_is_a_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        window_state.load(data)


class ClosedPipe(io.BytesIO):
    def write(self, data: bytes) -> int:  # type: ignore[override]
        raise BrokenPipeError("reader went away")


def test_stdout_closed_keeps_the_body_pending() -> None:
    import asyncio

    attempt = asyncio.run(StdoutSink(ClosedPipe()).attempt(Body(b"{}", 1)))
    assert attempt.action is Action.RETRY and attempt.delivered == 0
