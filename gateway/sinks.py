"""Where request bodies go: one attempt at a time, and what became of it.

A sink makes exactly one attempt per call and says what should happen next (an
``Attempt``); the delivery loop (``gateway.delivery``) decides when to call it again.
``--endpoint stdout`` prints each request body as one JSON line, exactly what would be
POSTed, instead of sending it.  ``gateway.delivery.ApiSink`` is the JD Cloud sink.

No numpy.
"""

from __future__ import annotations

import contextlib
import enum
import sys
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from gateway.batches import Body


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
