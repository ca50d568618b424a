"""Fault injection for the emulator: what the next requests should suffer.

Owns ``FaultState`` (set from CLI flags at start and from ``POST /control/faults`` at run
time), its JSON form, and ``FaultDecision`` (what one request gets, consumed in order:
latency, then drop, then status). Point rejection by metric name is applied per point.
No aiohttp, no I/O, no logging, no clock.

Control JSON (every key optional; ``null`` clears that fault; unknown keys are errors)::

    {"status": 503, "status_count": 2, "retry_after": 5,
     "latency": 0.5, "latency_count": 0,
     "drop": 1,
     "reject_metric": "^bad\\\\."}

A count of 0 means "every request until cleared"; ``status_count`` defaults to 1 and
``latency_count`` to 0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_LATENCY_SECONDS = 600.0
FAULT_KEYS = (
    "status",
    "status_count",
    "retry_after",
    "latency",
    "latency_count",
    "drop",
    "reject_metric",
)


class FaultSpecError(ValueError):
    """A fault specification that cannot be applied (the message says which key)."""


@dataclass(frozen=True, slots=True)
class FaultDecision:
    """What one putMetricData request gets before normal processing."""

    latency: float = 0.0
    drop: bool = False
    status: int | None = None
    retry_after: int | None = None


class FaultState:
    """The faults in force. Mutated only by ``update``, ``clear`` and ``take``."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """No faults at all."""
        self.status: int | None = None
        self.status_remaining = 0
        self.retry_after: int | None = None
        self.latency = 0.0
        self.latency_remaining = 0
        self.drop_remaining = 0
        self.reject_metric: re.Pattern[str] | None = None

    def update(self, spec: Mapping[str, Any]) -> None:
        """Apply a control JSON object; validates every key before changing anything."""
        unknown = sorted(str(k) for k in spec if k not in FAULT_KEYS)
        if unknown:
            raise FaultSpecError(f"unknown fault keys: {', '.join(unknown)}")
        staged = _Staged(self)
        if "status" in spec:
            staged.status = _optional_int(spec, "status", 100, 599)
            staged.status_remaining = 1 if staged.status is not None else 0
        if "status_count" in spec:
            staged.status_remaining = _int_or_zero(spec, "status_count")
        if "retry_after" in spec:
            staged.retry_after = _optional_int(spec, "retry_after", 0, 86400)
        if "latency" in spec:
            staged.latency = _latency(spec["latency"])
        if "latency_count" in spec:
            staged.latency_remaining = _int_or_zero(spec, "latency_count")
        if "drop" in spec:
            staged.drop_remaining = _int_or_zero(spec, "drop")
        if "reject_metric" in spec:
            staged.reject_metric = _pattern(spec["reject_metric"])
        staged.apply(self)

    def take(self) -> FaultDecision:
        """The faults for one request, using up one of each limited count that applies."""
        latency = 0.0
        if self.latency > 0:
            latency = self.latency
            if self.latency_remaining > 0:
                self.latency_remaining -= 1
                if self.latency_remaining == 0:
                    self.latency = 0.0
        if self.drop_remaining > 0:
            self.drop_remaining -= 1
            return FaultDecision(latency=latency, drop=True)
        if self.status is not None:
            decision = FaultDecision(
                latency=latency, status=self.status, retry_after=self.retry_after
            )
            if self.status_remaining > 0:
                self.status_remaining -= 1
                if self.status_remaining == 0:
                    self.status = None
                    self.retry_after = None
            return decision
        return FaultDecision(latency=latency)

    def rejects(self, metric: object) -> str | None:
        """The errDetail for a point whose metric matches ``reject_metric``, else None."""
        pattern = self.reject_metric
        if pattern is None or not isinstance(metric, str) or not pattern.search(metric):
            return None
        return f"metric: rejected by injected fault (reject_metric={pattern.pattern!r})"

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "status_count": self.status_remaining,
            "retry_after": self.retry_after,
            "latency": self.latency,
            "latency_count": self.latency_remaining,
            "drop": self.drop_remaining,
            "reject_metric": None if self.reject_metric is None else self.reject_metric.pattern,
        }


class _Staged:
    """A copy of the settable fields, so a bad spec changes nothing."""

    def __init__(self, state: FaultState) -> None:
        self.status = state.status
        self.status_remaining = state.status_remaining
        self.retry_after = state.retry_after
        self.latency = state.latency
        self.latency_remaining = state.latency_remaining
        self.drop_remaining = state.drop_remaining
        self.reject_metric = state.reject_metric

    def apply(self, state: FaultState) -> None:
        state.status = self.status
        state.status_remaining = self.status_remaining if self.status is not None else 0
        state.retry_after = self.retry_after
        state.latency = self.latency
        state.latency_remaining = self.latency_remaining if self.latency > 0 else 0
        state.drop_remaining = self.drop_remaining
        state.reject_metric = self.reject_metric


def _optional_int(spec: Mapping[str, Any], key: str, low: int, high: int) -> int | None:
    value = spec[key]
    if value is None:
        return None
    if type(value) is not int or not low <= value <= high:
        raise FaultSpecError(f"{key}: must be an integer in {low}..{high} or null")
    return value


def _int_or_zero(spec: Mapping[str, Any], key: str) -> int:
    value = spec[key]
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise FaultSpecError(f"{key}: must be an integer >= 0 (0: until cleared) or null")
    return value


def _latency(value: object) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise FaultSpecError("latency: must be a number of seconds or null")
    if not math.isfinite(value) or not 0 <= value <= MAX_LATENCY_SECONDS:
        raise FaultSpecError(f"latency: must be between 0 and {MAX_LATENCY_SECONDS:g} seconds")
    return float(value)


def _pattern(value: object) -> re.Pattern[str] | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise FaultSpecError("reject_metric: must be a non-empty regular expression or null")
    try:
        return re.compile(value)
    except re.error as exc:
        raise FaultSpecError(f"reject_metric: not a regular expression: {exc}") from None
