"""Where request bodies go: the outcome of one send, and the ``stdout`` sink.

``--endpoint stdout`` prints each request body as one JSON line, exactly what would be
POSTed, instead of sending it.  The JD Cloud client (``gateway.client``) is the other sink.

No numpy.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from gateway.batches import Body


@dataclass(frozen=True, slots=True)
class SendResult:
    """What became of one body: points delivered and refused, and the request's outcome."""

    delivered: int
    rejected: int = 0
    status: str = "ok"
    request_id: str | None = None


class Sink(Protocol):
    async def send(self, body: Body) -> SendResult: ...

    async def aclose(self) -> None: ...


class StdoutSink:
    def __init__(self, stream: BinaryIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout.buffer

    async def send(self, body: Body) -> SendResult:
        self._stream.write(body.data + b"\n")
        self._stream.flush()
        return SendResult(delivered=body.points, status="stdout")

    async def aclose(self) -> None:
        self._stream.flush()
