"""Delivery to the API: a small pure policy, and the sink that follows it (CONTRACT 6).

``decide`` maps one attempt's outcome to what happens next:

    200, success                    DELIVERED
    400 (or 200) with point errors  PARTIAL: those points refused for good, the rest delivered
    400 without point errors        REJECTED: the whole request refused for good
    any other status                REJECTED (404, 413, 501, ...: retrying cannot help)
    408 429 500 502 503 504,
    time-out, connection error      RETRY after full-jitter backoff (1 s doubling to 60 s),
                                    never sooner than Retry-After
    401 403                         HOLD: keep the points, retry at the slowest pace

``ApiSink`` sends one body through ``JDCloudClient`` until it is delivered, refused, or its
attempts run out (then its points are dropped and counted).  Every attempt is signed afresh
by the client.  The sleep goes through the injected clock and the jitter through an injected
random source, so tests control both.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from gateway.batches import Body
from gateway.client import JDCloudClient, PutResult
from gateway.clock import Clock
from gateway.errors import DeliveryError
from gateway.logs import LogLimiter
from gateway.sinks import SendResult

logger = logging.getLogger(__name__)

BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
FAILING_AFTER = 3
"""Consecutive failed attempts after which ``/readyz`` reports delivery as failing."""


class Action(enum.Enum):
    DELIVERED = "delivered"
    PARTIAL = "partial"
    REJECTED = "rejected"
    RETRY = "retry"
    HOLD = "hold"


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    delay: float = 0.0


def backoff(attempt: int, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)); ``attempt`` counts from 0."""
    return rng() * min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 32))


def decide(outcome: PutResult | DeliveryError, attempt: int, rng: Callable[[], float]) -> Decision:
    if isinstance(outcome, DeliveryError):
        return Decision(Action.RETRY, backoff(attempt, rng))
    status = outcome.status
    if status == 200 and outcome.success:
        return Decision(Action.DELIVERED)
    if status in (200, 400) and outcome.rejected:
        return Decision(Action.PARTIAL)
    if status in (401, 403):
        return Decision(Action.HOLD, BACKOFF_CAP)
    if outcome.retryable:
        return Decision(Action.RETRY, max(backoff(attempt, rng), outcome.retry_after or 0.0))
    return Decision(Action.REJECTED)


class ApiSink:
    """Sends bodies to putMetricData, following ``decide``, for at most ``max_attempts``."""

    def __init__(
        self,
        client: JDCloudClient,
        clock: Clock,
        *,
        max_attempts: int = 5,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._client = client
        self._clock = clock
        self._max_attempts = max_attempts
        self._rng = rng
        self._failures = 0
        self._log_rejects = LogLimiter(clock, per_minute=10)

    @property
    def failing(self) -> bool:
        return self._failures >= FAILING_AFTER

    async def send(self, body: Body) -> SendResult:
        attempts: list[tuple[str, float]] = []
        for attempt in range(self._max_attempts):
            started = self._clock.monotonic()
            try:
                outcome: PutResult | DeliveryError = await self._client.put(body.data)
            except DeliveryError as exc:
                outcome = exc
            status = "error" if isinstance(outcome, DeliveryError) else str(outcome.status)
            attempts.append((status, self._clock.monotonic() - started))
            decision = decide(outcome, attempt, self._rng)
            if isinstance(outcome, DeliveryError):
                logger.warning("putMetricData attempt %d failed: %s", attempt + 1, outcome)
            elif decision.action is Action.DELIVERED:
                self._failures = 0
                return SendResult(body.points, request_id=outcome.request_id, attempts=(*attempts,))
            elif decision.action is Action.PARTIAL:
                self._failures = 0
                return self._partial(body, outcome, attempts)
            elif decision.action is Action.REJECTED:
                logger.error(
                    "putMetricData refused the whole request points=%d %s",
                    body.points,
                    outcome.describe(),
                )
                return SendResult(
                    0, rejected=body.points, request_id=outcome.request_id, attempts=(*attempts,)
                )
            else:
                hold = decision.action is Action.HOLD
                (logger.error if hold else logger.warning)(
                    "putMetricData attempt %d: %s; retrying in %.1fs%s",
                    attempt + 1,
                    outcome.describe(),
                    decision.delay,
                    " (check JDCLOUD_ACCESS_KEY / JDCLOUD_SECRET_KEY)" if hold else "",
                )
            self._failures += 1
            if attempt + 1 < self._max_attempts:
                await self._clock.sleep(decision.delay)
        logger.error(
            "putMetricData gave up after %d attempts; points dropped=%d",
            self._max_attempts,
            body.points,
        )
        return SendResult(0, dropped=body.points, attempts=(*attempts,))

    def _partial(
        self, body: Body, outcome: PutResult, attempts: list[tuple[str, float]]
    ) -> SendResult:
        refused = min(len(outcome.rejected), body.points)
        for error in outcome.rejected:
            if self._log_rejects.allow():
                logger.warning(
                    "point refused by the API requestId=%s errDetail=%r point=%s",
                    outcome.request_id or "-",
                    error.detail,
                    error.point[:300],
                )
        return SendResult(
            body.points - refused,
            rejected=refused,
            request_id=outcome.request_id,
            attempts=(*attempts,),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
