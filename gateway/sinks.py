"""Where request bodies go: the outcome of one send, and the ``stdout`` sink.

``--endpoint stdout`` prints each request body as one JSON line, exactly what would be
POSTed, instead of sending it.  ``gateway.delivery.ApiSink`` is the other sink.

No numpy.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from gateway.batches import Body


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one body: points delivered, refused by the API, or given up on."""

    delivered: int
    rejected: int = 0
    dropped: int = 0
    request_id: str | None = None
    attempts: tuple[tuple[str, float], ...] = ()
    """(status, seconds) of every request made: an HTTP status, ``error`` or ``stdout``."""


class Sink(Protocol):
    @property
    def failing(self) -> bool:
        """True while delivery keeps failing; ``/readyz`` reports it."""
        ...

    async def send(self, body: Body) -> SendResult: ...

    async def aclose(self) -> None: ...


class StdoutSink:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer

    @property
    def failing(self) -> bool:
        return False

    async def send(self, body: Body) -> SendResult:
        self._stream.write(body.data + b"\n")
        self._stream.flush()
        return SendResult(delivered=body.points, attempts=(("stdout", 0.0),))

    async def aclose(self) -> None:
        self._stream.flush()
