"""Where request bodies go: one attempt at a time, and what became of it.

A sink makes exactly one attempt per call and says what should happen next (an
``Attempt``); the delivery loop (``gateway.delivery``) decides when to call it again.
``StdoutSink`` (``--endpoint stdout``) prints each request body as one JSON line, exactly
what would be POSTed.  ``ApiSink`` makes one signed putMetricData attempt and judges the
answer with ``gateway.policy``.

No numpy.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from gateway.batches import Body
from gateway.clock import Clock
from gateway.errors import DeliveryError
from gateway.logs import LogLimiter
from gateway.policy import Action, decide

if TYPE_CHECKING:
    from gateway.client import JDCloudClient, PutResult

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request: its outcome, what to do next, and the points it settled."""

    action: Action
    status: str
    """The HTTP status as text, ``error`` (time-out, connection) or ``stdout``."""
    seconds: float = 0.0
    delay: float = 0.0
    """With RETRY or HOLD: how long to wait before the next attempt."""
    delivered: int = 0
    rejected: int = 0
    request_id: str | None = None


class Sink(Protocol):
    async def attempt(self, body: Body) -> Attempt: ...

    async def aclose(self) -> None: ...


class StdoutSink:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer

    async def attempt(self, body: Body) -> Attempt:
        try:
            self._stream.write(body.data + b"\n")
            self._stream.flush()
        except OSError:  # a closed pipe: keep the body, as for an unreachable API
            return Attempt(Action.RETRY, "error", delay=1.0)
        return Attempt(Action.DELIVERED, "stdout", delivered=body.points)

    async def aclose(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.flush()


class ApiSink:
    """One signed putMetricData attempt per call, judged by ``decide``."""

    def __init__(
        self, client: JDCloudClient, clock: Clock, *, rng: Callable[[], float] = random.random
    ) -> None:
        self._client = client
        self._clock = clock
        self._rng = rng
        self._streak = 0
        self._log_rejects = LogLimiter(clock, per_minute=10)

    async def attempt(self, body: Body) -> Attempt:
        started = self._clock.monotonic()
        try:
            outcome: PutResult | DeliveryError = await self._client.put(body.data)
        except DeliveryError as exc:
            outcome = exc
        seconds = self._clock.monotonic() - started
        action, delay = decide(outcome, self._streak, self._rng)
        self._streak = 0 if action.final else self._streak + 1
        if isinstance(outcome, DeliveryError):
            logger.warning("putMetricData failed: %s; retrying in %.1fs", outcome, delay)
            return Attempt(action, "error", seconds, delay)
        status = str(outcome.status)
        if action is Action.DELIVERED:
            return Attempt(
                action, status, seconds, delivered=body.points, request_id=outcome.request_id
            )
        if action is Action.PARTIAL:
            return self._partial(body, outcome, seconds)
        if action is Action.REJECTED:
            logger.error(
                "putMetricData refused the whole request points=%d %s",
                body.points,
                outcome.describe(),
            )
            return Attempt(
                action, status, seconds, rejected=body.points, request_id=outcome.request_id
            )
        hold = action is Action.HOLD
        (logger.error if hold else logger.warning)(
            "putMetricData %s; retrying in %.1fs%s",
            outcome.describe(),
            delay,
            " (check JDCLOUD_ACCESS_KEY / JDCLOUD_SECRET_KEY; points are kept)" if hold else "",
        )
        return Attempt(action, status, seconds, delay, request_id=outcome.request_id)

    def _partial(self, body: Body, outcome: PutResult, seconds: float) -> Attempt:
        refused = min(len(outcome.rejected), body.points)
        for error in outcome.rejected:
            if self._log_rejects.allow():
                logger.warning(
                    "point refused by the API requestId=%s errDetail=%r point=%s",
                    outcome.request_id or "-",
                    error.detail,
                    error.point[:300],
                )
        return Attempt(
            Action.PARTIAL,
            str(outcome.status),
            seconds,
            delivered=body.points - refused,
            rejected=refused,
            request_id=outcome.request_id,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
