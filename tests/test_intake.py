"""``gateway.intake``: what a receiving process is built with from its settings."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from gateway.config import Settings
from gateway.intake import MIN_PARSER_CACHE, Intake
from gateway.metrics import GatewayMetrics


@pytest.mark.parametrize(
    ("max_series", "cache"),
    [
        pytest.param(1_000, MIN_PARSER_CACHE, id="small-budget-keeps-the-floor"),
        pytest.param(600_000, 600_000, id="default-budget"),
        pytest.param(2_000_000, 2_000_000, id="a-million-series-stay-cached"),
    ],
)
def test_the_parser_cache_covers_the_series_budget(max_series: int, cache: int) -> None:
    intake = Intake(Settings(max_series=max_series), GatewayMetrics(CollectorRegistry()), 0.0)
    assert intake.parser.cache_size == cache


def test_a_batch_is_counted_by_what_each_stage_did() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    intake = Intake(Settings(), metrics, 1000.0)
    intake.on_batch("udp", [b"a:1|c\nb:2|g\nbad\n_e{1,1}:x|y", b"a:x|c"], 1000.5)
    totals = {k: v for k, v in metrics.counter_totals().items() if v}
    assert totals == {
        ("datagrams_received", ("udp",)): 2,
        ("received_bytes", ("udp",)): 32,
        ("lines_received", ()): 5,
        ("lines_rejected", ("missing_colon",)): 1,
        ("lines_rejected", ("bad_value",)): 1,
        ("lines_ignored", ("event",)): 1,
        ("samples", ("counter",)): 1,
        ("samples", ("gauge",)): 1,
        ("series_created", ()): 2,
    }


def test_datagrams_that_filled_the_read_buffer_are_counted_as_truncated() -> None:
    """A read of READ_SIZE bytes may have cut a longer (Unix) datagram: counted, still parsed."""
    from gateway.listener import READ_SIZE

    metrics = GatewayMetrics(CollectorRegistry())
    intake = Intake(Settings(), metrics, 1000.0)
    full = b"big:1|c\n" + b"x" * (READ_SIZE - 8)
    intake.on_batch("unix", [b"a:1|c", full, full, b"b:1|c"], 1000.5)
    totals = {k: v for k, v in metrics.counter_totals().items() if v}
    assert totals[("datagrams_truncated", ("unix",))] == 2
    assert ("datagrams_truncated", ("udp",)) not in totals
    assert totals[("samples", ("counter",))] == 4
