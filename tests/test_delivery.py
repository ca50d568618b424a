"""Delivery: the pure policy for every status class, and ApiSink over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from gateway.batches import pack
from gateway.client import JDCloudClient, PointError, PutResult
from gateway.delivery import BACKOFF_CAP, Action, ApiSink, backoff, decide
from gateway.emulator import start_emulator
from gateway.errors import DeliveryError
from gateway.signer import Credentials
from tests.clocks import FakeClock

KEYS = ("AKTESTGATEWAY01", "test-secret-not-real")


def half() -> float:
    return 0.5


@pytest.mark.parametrize(
    ("outcome", "action"),
    [
        pytest.param(PutResult(200, True), Action.DELIVERED, id="200"),
        pytest.param(
            PutResult(400, False, rejected=(PointError("d", "p"),)), Action.PARTIAL, id="400-points"
        ),
        pytest.param(
            PutResult(200, False, rejected=(PointError("d", "p"),)), Action.PARTIAL, id="200-points"
        ),
        pytest.param(PutResult(400, False), Action.REJECTED, id="400-whole"),
        pytest.param(PutResult(404, False), Action.REJECTED, id="404"),
        pytest.param(PutResult(413, False), Action.REJECTED, id="413"),
        *[
            pytest.param(PutResult(s, False), Action.RETRY, id=str(s))
            for s in (408, 429, 500, 502, 503, 504)
        ],
        pytest.param(PutResult(501, False), Action.REJECTED, id="501-not-in-the-retry-list"),
        pytest.param(DeliveryError("timeout", retryable=True), Action.RETRY, id="timeout"),
        pytest.param(PutResult(401, False), Action.HOLD, id="401"),
        pytest.param(PutResult(403, False), Action.HOLD, id="403"),
    ],
)
def test_decide(outcome: PutResult | DeliveryError, action: Action) -> None:
    assert decide(outcome, 0, half).action is action


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(0, 1.0), (1, 2.0), (3, 8.0), (6, 60.0), (40, 60.0)]
)
def test_backoff_doubles_to_the_cap_with_full_jitter(attempt: int, ceiling: float) -> None:
    assert backoff(attempt, lambda: 0.0) == 0.0
    assert backoff(attempt, half) == ceiling / 2
    assert backoff(attempt, lambda: 0.999999) < ceiling


def test_retry_after_is_a_floor_and_auth_waits_longest() -> None:
    assert decide(PutResult(429, False, retry_after=30), 0, half).delay == 30
    assert decide(PutResult(429, False, retry_after=0.1), 3, half).delay == 4.0
    assert decide(PutResult(401, False), 0, half).delay == BACKOFF_CAP


def _points(n: int, prefix: str = "sink.m") -> list[bytes]:
    ts = int(time.time()) // 60 * 60
    return [
        json.dumps(
            {
                "namespace": "statsd",
                "metric": f"{prefix}{i}",
                "dimensions": {"host": "n1"},
                "timestamp": ts,
                "type": 2,
                "values": {"avg": i, "sum": i, "last": i, "max": i, "min": i, "count": 1},
            },
            separators=(",", ":"),
        ).encode()
        for i in range(n)
    ]


def _run(
    faults: dict[str, Any] | None, points: list[bytes], *, secret: str = KEYS[1], attempts: int = 5
):  # type: ignore[no-untyped-def]
    async def go():  # type: ignore[no-untyped-def]
        emulator = await start_emulator(credentials=KEYS, faults=faults)
        clock = FakeClock()
        client = JDCloudClient(emulator.endpoint(1), Credentials(KEYS[0], secret), timeout=2)
        sink = ApiSink(client, clock, max_attempts=attempts, rng=half)
        try:
            results = [await sink.send(body) for body in pack(points)]
            return (
                results,
                emulator.stats.to_json(points_stored=len(emulator.store.query())),
                clock.slept,
                sink.failing,
            )
        finally:
            await sink.aclose()
            await emulator.close()

    return asyncio.run(go())


def test_500_then_200_delivers_once() -> None:
    results, stats, slept, failing = _run({"status": 500, "status_count": 1}, _points(3))
    assert [r.delivered for r in results] == [3]
    assert stats["requests_by_status"] == {"200": 1, "500": 1}
    assert stats["points_accepted"] == 3 and stats["overwrites"] == 0
    assert slept == [0.5] and not failing


def test_429_retry_after_is_honoured() -> None:
    results, stats, slept, _ = _run(
        {"status": 429, "status_count": 2, "retry_after": 7}, _points(2)
    )
    assert results[0].delivered == 2 and stats["points_accepted"] == 2
    assert slept == [7.0, 7.0]


def test_dropped_connection_is_retried() -> None:
    results, stats, _, _ = _run({"drop": 1}, _points(2))
    assert results[0].delivered == 2 and stats["points_accepted"] == 2 and stats["overwrites"] == 0


def test_partial_400_refuses_only_those_points() -> None:
    points = _points(4) + _points(2, prefix="sink.bad")
    results, stats, slept, _ = _run({"reject_metric": r"^sink\.bad"}, points)
    assert (results[0].delivered, results[0].rejected) == (4, 2)
    assert results[0].request_id
    assert stats["points_accepted"] == 4 and stats["requests_total"] == 1 and slept == []


def test_wrong_credentials_hold_then_give_up_counted() -> None:
    results, stats, slept, failing = _run(None, _points(2), secret="wrong", attempts=3)
    assert (results[0].delivered, results[0].dropped) == (0, 2)
    assert stats["signature_failures"] == 3 and slept == [BACKOFF_CAP, BACKOFF_CAP]
    assert failing


class RecordingTransport(httpx.AsyncHTTPTransport):
    """The real HTTP transport, noting the signing headers of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        h = request.headers
        self.seen.append((h["x-jdcloud-nonce"], h["x-jdcloud-date"], h["authorization"]))
        return await super().handle_async_request(request)


def test_every_attempt_is_signed_afresh() -> None:
    async def go():  # type: ignore[no-untyped-def]
        emulator = await start_emulator(credentials=KEYS, faults={"status": 503, "status_count": 2})
        transport = RecordingTransport()
        client = JDCloudClient(emulator.endpoint(1), Credentials(*KEYS), transport=transport)
        sink = ApiSink(client, FakeClock(), rng=half)
        try:
            result = await sink.send(next(pack(_points(1))))
        finally:
            await sink.aclose()
            await emulator.close()
        return result, transport.seen

    result, seen = asyncio.run(go())
    assert result.delivered == 1 and len(seen) == 3
    assert len({nonce for nonce, _, _ in seen}) == 3
    assert len({auth for _, _, auth in seen}) == 3
