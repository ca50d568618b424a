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
    """Group encoded points into bodies, flushing on whichever limit is reached first.

    A point too large for a body on its own cannot happen with the API's name and dimension
    limits (a point is under 2 KiB); it raises rather than producing a body the API refuses.
    """
    room = max_bytes - len(_HEAD) - len(_TAIL)
    chunk: list[bytes] = []
    size = 0
    for point in points:
        extra = len(point) + (1 if chunk else 0)
        if chunk and (len(chunk) >= max_points or size + extra > room):
            yield _body(chunk)
            chunk, size, extra = [], 0, len(point)
        if extra > room:
            raise ValueError(f"a point of {len(point)} bytes does not fit in a request body")
        chunk.append(point)
        size += extra
    if chunk:
        yield _body(chunk)


def _body(chunk: list[bytes]) -> Body:
    return Body(_HEAD + b",".join(chunk) + _TAIL, len(chunk))
