"""Delivery: the pure policy for every status class, and ApiSink over real HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from gateway.batches import Body, pack
from gateway.client import JDCloudClient, PointError, PutResult
from gateway.clock import SystemClock
from gateway.delivery import Delivery
from gateway.emulator import start_emulator
from gateway.errors import DeliveryError
from gateway.listener import INTAKE_PAUSE
from gateway.metrics import GatewayMetrics
from gateway.policy import BACKOFF_CAP, Action, backoff, decide
from gateway.signer import Credentials
from gateway.sinks import ApiSink, Attempt, StdoutSink
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
    assert decide(outcome, 0, half)[0] is action


@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(0, 1.0), (1, 2.0), (3, 8.0), (6, 60.0), (40, 60.0)]
)
def test_backoff_doubles_to_the_cap_with_full_jitter(attempt: int, ceiling: float) -> None:
    assert backoff(attempt, lambda: 0.0) == 0.0
    assert backoff(attempt, half) == ceiling / 2
    assert backoff(attempt, lambda: 0.999999) < ceiling


def test_retry_after_is_a_floor_and_auth_waits_longest() -> None:
    assert decide(PutResult(429, False, retry_after=30), 0, half)[1] == 30
    assert decide(PutResult(429, False, retry_after=0.1), 3, half)[1] == 4.0
    assert decide(PutResult(401, False), 0, half)[1] == BACKOFF_CAP


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


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _deliver(
    faults: dict[str, Any] | None,
    points: list[bytes],
    *,
    secret: str = KEYS[1],
    timeout: float = 600.0,
    transport: httpx.AsyncBaseTransport | None = None,
    **options: Any,
):  # type: ignore[no-untyped-def]
    """Queue the bodies, run the loop until the outbox is empty (fake time) or ``timeout``."""

    async def go():  # type: ignore[no-untyped-def]
        emulator = await start_emulator(credentials=KEYS, faults=faults)
        clock = FakeClock(start=time.time())  # the emulator checks timestamps by real time
        registry = CollectorRegistry()
        client = JDCloudClient(
            emulator.endpoint(1), Credentials(KEYS[0], secret), timeout=2, transport=transport
        )
        sink = ApiSink(client, clock, rng=half)
        settings = {"max_points": 10_000, "max_age": 7 * 86400.0, "per_minute": 1000.0,
                    "send_jitter": 0.0, **options}  # fmt: skip
        delivery = Delivery(sink, clock, GatewayMetrics(registry), rng=half, **settings)
        await delivery.enqueue(list(pack(points)), int(time.time()) // 60 * 60)
        try:
            await delivery.finish(timeout)
            stats = emulator.stats.to_json(points_stored=len(emulator.store.query()))
            return stats, clock.slept, delivery, registry
        finally:
            await sink.aclose()
            await emulator.close()

    return asyncio.run(go())


def test_500_then_200_delivers_once() -> None:
    stats, slept, delivery, registry = _deliver({"status": 500, "status_count": 1}, _points(3))
    assert stats["requests_by_status"] == {"200": 1, "500": 1}
    assert stats["points_accepted"] == 3 and stats["overwrites"] == 0
    assert slept == [0.5] and not delivery.failing and delivery.pending_points == 0
    assert _metric(registry, "statsd_gateway_requests_total", status="500") == 1
    assert _metric(registry, "statsd_gateway_points_sent_total") == 3


def test_429_retry_after_is_honoured_and_slows_the_pace() -> None:
    stats, slept, _, registry = _deliver(
        {"status": 429, "status_count": 2, "retry_after": 7}, _points(2)
    )
    assert stats["points_accepted"] == 2 and slept == [7.0, 7.0]
    # Halved twice by the 429s, then recovering by a tenth with the success.
    assert _metric(registry, "statsd_gateway_request_rate_factor") == pytest.approx(0.25 * 1.1)


def test_dropped_connection_is_retried() -> None:
    stats, _, _, _ = _deliver({"drop": 1}, _points(2))
    assert stats["points_accepted"] == 2 and stats["overwrites"] == 0


def test_partial_400_refuses_only_those_points() -> None:
    points = _points(4) + _points(2, prefix="sink.bad")
    stats, slept, _, registry = _deliver({"reject_metric": r"^sink\.bad"}, points)
    assert stats["points_accepted"] == 4 and stats["requests_total"] == 1 and slept == []
    assert _metric(registry, "statsd_gateway_points_rejected_total", reason="api") == 2
    assert _metric(registry, "statsd_gateway_points_sent_total") == 4


def test_wrong_credentials_hold_the_points_at_the_slowest_pace() -> None:
    stats, slept, delivery, registry = _deliver(None, _points(2), secret="wrong", timeout=200)
    assert stats["signature_failures"] == 4 and slept == [BACKOFF_CAP] * 3
    assert delivery.failing and delivery.pending_points == 0  # logged as lost at the deadline
    assert _metric(registry, "statsd_gateway_points_dropped_total", reason="shutdown") == 2


def test_long_outage_keeps_every_point_until_the_api_is_back() -> None:
    stats, slept, _, _ = _deliver({"status": 503, "status_count": 12}, _points(120))
    assert stats["points_accepted"] == 120 and stats["overwrites"] == 0
    assert len(slept) == 12 and max(slept) == BACKOFF_CAP / 2  # capped full jitter at rng 0.5


def test_backlog_bound_drops_the_oldest_and_counts_them() -> None:
    stats, _, _, registry = _deliver(None, _points(150), max_points=100)
    assert stats["points_accepted"] == 100
    assert _metric(registry, "statsd_gateway_points_dropped_total", reason="backlog_full") == 50
    accepted = stats["points_accepted"]
    assert accepted + 50 == 150


def test_points_older_than_max_age_are_dropped_and_counted() -> None:
    stats, _, _, registry = _deliver(None, _points(10), max_age=1.0)
    assert stats["requests_total"] == 0
    assert _metric(registry, "statsd_gateway_points_dropped_total", reason="too_old") == 10


def test_requests_are_paced_by_the_token_bucket() -> None:
    stats, slept, _, _ = _deliver(None, _points(50 * 5), per_minute=60.0)
    assert stats["requests_total"] == 5
    assert slept == [1.0] * 4  # one token a second after the first


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
    transport = RecordingTransport()
    stats, _, _, _ = _deliver({"status": 503, "status_count": 2}, _points(1), transport=transport)
    assert stats["points_accepted"] == 1 and len(transport.seen) == 3
    assert len({nonce for nonce, _, _ in transport.seen}) == 3
    assert len({auth for _, _, auth in transport.seen}) == 3


class WindowArrivesMidFlight:
    """A sink during whose attempt a new window is queued with the backlog at its bound."""

    def __init__(self) -> None:
        self.delivery: Delivery | None = None
        self.calls = 0

    async def attempt(self, body: Body) -> Attempt:
        self.calls += 1
        if self.calls == 1:
            assert self.delivery is not None
            await self.delivery.enqueue([Body(b"{3}", 50)], int(time.time()), delay=False)
        return Attempt(Action.DELIVERED, "200", delivered=body.points)

    async def aclose(self) -> None:
        return None


def test_a_body_in_flight_is_never_dropped_under_it() -> None:
    async def go() -> CollectorRegistry:
        registry = CollectorRegistry()
        sink = WindowArrivesMidFlight()
        delivery = Delivery(
            sink, FakeClock(start=time.time()), GatewayMetrics(registry),
            max_points=100, max_age=1e6, per_minute=1000, send_jitter=0,
        )  # fmt: skip
        sink.delivery = delivery
        await delivery.enqueue([Body(b"{1}", 50), Body(b"{2}", 50)], int(time.time()), delay=False)
        await delivery.finish(5)
        return registry

    registry = asyncio.run(go())
    # 150 points were queued against a bound of 100: the body in flight is delivered, the
    # next oldest is dropped, and each point is counted exactly once.
    assert _metric(registry, "statsd_gateway_points_sent_total") == 100
    assert _metric(registry, "statsd_gateway_points_dropped_total", reason="backlog_full") == 50


def test_bodies_wait_for_intake_while_datagrams_are_queued() -> None:
    """Each delivered body is followed by a pause while intake is behind, and every body
    still goes out."""
    asked: list[bool] = []

    def behind() -> bool:
        asked.append(True)
        return True

    async def go() -> tuple[bytes, float]:
        out = io.BytesIO()
        delivery = Delivery(
            StdoutSink(out), SystemClock(), GatewayMetrics(CollectorRegistry()),
            max_points=1000, max_age=1e6, per_minute=None, send_jitter=0, intake_behind=behind,
        )  # fmt: skip
        stop = asyncio.Event()
        bodies = [Body(b"{%d}" % i, 1) for i in range(10)]
        started = time.monotonic()
        await delivery.enqueue(bodies, int(time.time()), delay=False)
        running = asyncio.create_task(delivery.run(stop))
        while out.getvalue().count(b"\n") < len(bodies):
            await asyncio.sleep(0.001)
        took = time.monotonic() - started
        stop.set()
        delivery._wake.set()
        await running
        return out.getvalue(), took

    written, took = asyncio.run(go())
    assert written == b"".join(b"{%d}\n" % i for i in range(10))
    assert len(asked) >= 9  # after each body but perhaps the last
    assert took >= 9 * INTAKE_PAUSE
