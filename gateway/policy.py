"""What to do after one putMetricData attempt (CONTRACT 6): a small pure policy.

    200, success                    DELIVERED
    400 (or 200) with point errors  PARTIAL: those points refused for good, the rest delivered
    400 without point errors        REJECTED: the whole request refused for good
    any other status                REJECTED (404, 413, 501, ...: retrying cannot help)
    408 429 500 502 503 504,
    time-out, connection error      RETRY after full-jitter backoff (1 s doubling to 60 s),
                                    never sooner than Retry-After
    401 403                         HOLD: keep the points, retry at the slowest pace (60 s)

Pure: no I/O, no clock, no logging; the random source is injected.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

from gateway.client import PutResult
from gateway.errors import DeliveryError


class Action(enum.Enum):
    DELIVERED = "delivered"
    PARTIAL = "partial"
    REJECTED = "rejected"
    RETRY = "retry"
    HOLD = "hold"

    @property
    def final(self) -> bool:
        """The body is done with: delivered, or refused for good."""
        return self in (Action.DELIVERED, Action.PARTIAL, Action.REJECTED)


BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0


def backoff(attempt: int, rng: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**attempt)); ``attempt`` counts from 0."""
    return rng() * min(BACKOFF_CAP, BACKOFF_BASE * 2.0 ** min(attempt, 32))


def decide(
    outcome: PutResult | DeliveryError, attempt: int, rng: Callable[[], float]
) -> tuple[Action, float]:
    """What to do after one attempt, and how long to wait first (RETRY and HOLD)."""
    if isinstance(outcome, DeliveryError):
        return Action.RETRY, backoff(attempt, rng)
    status = outcome.status
    if status == 200 and outcome.success:
        return Action.DELIVERED, 0.0
    if status in (200, 400) and outcome.rejected:
        return Action.PARTIAL, 0.0
    if status in (401, 403):
        return Action.HOLD, BACKOFF_CAP
    if outcome.retryable:
        return Action.RETRY, max(backoff(attempt, rng), outcome.retry_after or 0.0)
    return Action.REJECTED, 0.0
