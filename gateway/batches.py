"""Encoded points become request bodies of at most 50 points and 262,144 bytes.

A body is ``{"metricDataList":[p1,p2,...]}``, serialised once here; the client signs and
sends exactly these bytes.  One window's points for one series are never split (each point
is one series-window), so bodies can be cut anywhere between points.

Pure: no I/O, no logging.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gateway.rules import MAX_BODY_BYTES, MAX_POINTS_PER_REQUEST

_HEAD = b'{"metricDataList":['
_TAIL = b"]}"


@dataclass(frozen=True, slots=True)
class Body:
    """One request body and how many points it carries."""

    data: bytes
    points: int


def pack(
    points: Iterable[bytes],
    *,
    max_points: int = MAX_POINTS_PER_REQUEST,
    max_bytes: int = MAX_BODY_BYTES,
) -> Iterator[Body]:
    """Group encoded points into bodies, flushing on whichever limit is reached first."""
    packer = Packer(max_points=max_points, max_bytes=max_bytes)
    yield from packer.feed(points)
    yield from packer.finish()


class Packer:
    """``pack`` in steps: points go in as they are encoded and full bodies come out, so a
    large window never holds all its points and all its bodies at the same time.

    A point too large for a body on its own cannot happen with the API's name and dimension
    limits (a point is under 2 KiB); it raises rather than producing a body the API refuses.
    """

    def __init__(
        self, *, max_points: int = MAX_POINTS_PER_REQUEST, max_bytes: int = MAX_BODY_BYTES
    ) -> None:
        self._max_points = max_points
        self._room = max_bytes - len(_HEAD) - len(_TAIL)
        self._chunk: list[bytes] = []
        self._size = 0

    def feed(self, points: Iterable[bytes]) -> Iterator[Body]:
        """Take ``points``; yield every body that is full."""
        room, max_points = self._room, self._max_points
        chunk, size = self._chunk, self._size
        for point in points:
            extra = len(point) + (1 if chunk else 0)
            if chunk and (len(chunk) >= max_points or size + extra > room):
                yield _body(chunk)
                chunk, size, extra = [], 0, len(point)
            if extra > room:
                raise ValueError(f"a point of {len(point)} bytes does not fit in a request body")
            chunk.append(point)
            size += extra
        self._chunk, self._size = chunk, size

    def finish(self) -> Iterator[Body]:
        """The last body, if points are left."""
        if self._chunk:
            yield _body(self._chunk)
        self._chunk, self._size = [], 0


def _body(chunk: list[bytes]) -> Body:
    return Body(_HEAD + b",".join(chunk) + _TAIL, len(chunk))
