"""The emulator's memory: accepted points (last write wins) and request counters.

Owns ``StoredPoint``, ``PointStore`` (add, query, clear) and ``EmulatorStats``.
Plain data structures: no aiohttp, no I/O, no logging, no clock (callers pass times).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SeriesKey = tuple[str, str, tuple[tuple[str, str], ...], int]
"""(namespace, metric, sorted dimension items, timestamp): what one stored point is."""


@dataclass(frozen=True, slots=True)
class StoredPoint:
    """One accepted point with its receive sequence number (1, 2, ... per emulator)."""

    seq: int
    namespace: str
    metric: str
    dimensions: Mapping[str, str]
    timestamp: int
    type: int
    values: Mapping[str, int | float]
    unit: str | None
    request_id: str
    path: str
    received_at: float

    def to_json(self) -> dict[str, Any]:
        """The point as ``GET /points`` shows it."""
        out: dict[str, Any] = {
            "seq": self.seq,
            "namespace": self.namespace,
            "metric": self.metric,
            "dimensions": dict(self.dimensions),
            "timestamp": self.timestamp,
            "type": self.type,
            "values": dict(self.values),
        }
        if self.unit is not None:
            out["unit"] = self.unit
        out["request_id"] = self.request_id
        out["path"] = self.path
        out["received_at"] = self.received_at
        return out


class PointStore:
    """Accepted points keyed by series and timestamp; a second write replaces the first."""

    def __init__(self) -> None:
        self._points: dict[SeriesKey, StoredPoint] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._points)

    def add(
        self, point: Mapping[str, Any], *, request_id: str, path: str, received_at: float
    ) -> tuple[StoredPoint, bool]:
        """Store a point that passed the rules; returns it and whether it overwrote one."""
        self._seq += 1
        dims = {str(k): str(v) for k, v in point["dimensions"].items()}
        stored = StoredPoint(
            seq=self._seq,
            namespace=point["namespace"],
            metric=point["metric"],
            dimensions=MappingProxyType(dims),
            timestamp=point["timestamp"],
            type=point["type"],
            values=MappingProxyType(dict(point["values"])),
            unit=point.get("unit"),
            request_id=request_id,
            path=path,
            received_at=received_at,
        )
        key: SeriesKey = (
            stored.namespace,
            stored.metric,
            tuple(sorted(dims.items())),
            stored.timestamp,
        )
        overwrote = key in self._points
        self._points[key] = stored
        return stored, overwrote

    def query(
        self,
        *,
        namespace: str | None = None,
        metric: str | None = None,
        dimensions: Mapping[str, str] | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> list[StoredPoint]:
        """Points matching every given filter, in receive order.

        ``dimensions`` must all be present with equal values (the point may have more);
        ``since`` is inclusive and ``until`` exclusive, both on the point's timestamp.
        """
        wanted = dict(dimensions or {})
        found = [
            p
            for p in self._points.values()
            if (namespace is None or p.namespace == namespace)
            and (metric is None or p.metric == metric)
            and (since is None or p.timestamp >= since)
            and (until is None or p.timestamp < until)
            and all(p.dimensions.get(k) == v for k, v in wanted.items())
        ]
        found.sort(key=lambda p: p.seq)
        return found

    def clear(self) -> int:
        """Forget every point (the sequence keeps counting); returns how many there were."""
        count = len(self._points)
        self._points.clear()
        return count


@dataclass(slots=True)
class EmulatorStats:
    """Counters since start (or the last ``reset``), as ``GET /stats`` shows them."""

    requests_by_status: Counter[str] = field(default_factory=Counter)
    points_accepted: int = 0
    points_rejected: int = 0
    overwrites: int = 0
    signature_failures: int = 0
    connections_dropped: int = 0

    def count_request(self, status: int | str) -> None:
        self.requests_by_status[str(status)] += 1

    @property
    def requests_total(self) -> int:
        return sum(self.requests_by_status.values())

    def reset(self) -> None:
        self.requests_by_status.clear()
        self.points_accepted = 0
        self.points_rejected = 0
        self.overwrites = 0
        self.signature_failures = 0
        self.connections_dropped = 0

    def to_json(self, *, points_stored: int) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "requests_by_status": dict(sorted(self.requests_by_status.items())),
            "points_accepted": self.points_accepted,
            "points_rejected": self.points_rejected,
            "points_stored": points_stored,
            "overwrites": self.overwrites,
            "signature_failures": self.signature_failures,
            "connections_dropped": self.connections_dropped,
        }
