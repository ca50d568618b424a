"""The putMetricData validation rules for one point, as the API states them.

Owns the request limits (points per request, body size) and the per-point rules of
``spec/putMetricData-seed.md``: fields, names, dimensions, timestamp, type and values.
``check_point`` returns every failed rule as an ``errDetail``-style string ``"<field>: <rule>"``
(an empty list means the point is valid). The gateway runs it on every point before sending;
the emulator runs it on every point it receives.

Pure: no I/O, no logging, no numpy, no asyncio. Imports only ``gateway.names``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.names import MAX_NAME_BYTES, is_api_name

VALUE_MAX = 9223372036854775807
"""Largest magnitude of a value. The float nearest to it (2**63) is over it and refused."""

AGG_KEYS = frozenset({"avg", "sum", "last", "max", "min", "count"})
"""The keys of ``values`` allowed for type 2 (aggregated) points."""

RAW_KEYS = frozenset({"value"})
"""The keys of ``values`` required for type 1 (raw) points."""

MAX_POINTS_PER_REQUEST = 50
MAX_BODY_BYTES = 262144
MAX_UNIT_BYTES = 64

TYPE_RAW = 1
TYPE_AGGREGATED = 2

REQUIRED_FIELDS = frozenset({"namespace", "metric", "dimensions", "timestamp", "type", "values"})
OPTIONAL_FIELDS = frozenset({"unit"})
_ALLOWED_FIELDS = REQUIRED_FIELDS | OPTIONAL_FIELDS
_FIELD_ORDER = ("namespace", "metric", "dimensions", "timestamp", "type", "values")

_TS_MIN = 1_000_000_000
_TS_MAX = 9_999_999_999
_SHOWN_CHARS = 64


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits that JD Cloud's documents disagree on, so they are configurable.

    ``max_future_seconds`` is not in the seed: the emulator and gateway refuse timestamps
    more than that far ahead of ``now`` (a clock-skew guard), default 10 minutes.
    """

    max_dimensions: int = 5
    max_dimension_bytes: int = 255
    max_age_seconds: int = 30 * 86400
    max_future_seconds: int = 600


_DEFAULT_LIMITS = Limits()


def check_point(point: object, *, now: float, limits: Limits = _DEFAULT_LIMITS) -> list[str]:
    """Every rule ``point`` breaks, as ``"<field>: <rule>"`` strings; ``[]`` when valid.

    ``now`` is Unix seconds (the caller's clock); it bounds the timestamp's age and lead.
    """
    if not isinstance(point, Mapping):
        return [f"point: must be a JSON object, got {_kind(point)}"]
    errors: list[str] = []
    for key in point:
        if key not in _ALLOWED_FIELDS:
            errors.append(f"{_path(key)}: unknown field (allowed: {', '.join(_FIELD_ORDER)}, unit)")
    for field in _FIELD_ORDER:
        if field not in point:
            errors.append(f"{field}: required field is missing")
    if "namespace" in point:
        _check_name("namespace", point["namespace"], MAX_NAME_BYTES, errors)
    if "metric" in point:
        _check_name("metric", point["metric"], MAX_NAME_BYTES, errors)
    if "unit" in point:
        _check_name("unit", point["unit"], MAX_UNIT_BYTES, errors)
    if "dimensions" in point:
        _check_dimensions(point["dimensions"], limits, errors)
    if "timestamp" in point:
        _check_timestamp(point["timestamp"], now, limits, errors)
    point_type = point.get("type")
    if "type" in point and not (type(point_type) is int and point_type in (1, 2)):
        errors.append(
            f"type: must be the integer 1 (raw) or 2 (aggregated), got {_show(point_type)}"
        )
        point_type = None
    if "values" in point:
        _check_values(point["values"], point_type, errors)
    return errors


def valid_series(
    namespace: str, metric: str, dimensions: Sequence[tuple[str, str]], limits: Limits
) -> bool:
    """True exactly when ``check_point`` finds nothing wrong with these three fields.

    The fast form for well-typed input (strings, a sequence of pairs with unique keys),
    as the gateway builds it: one regex per name and two sums, against the dozen checks
    of ``check_point``.  When it says no, call ``check_point`` for the reasons.
    ``tests/test_points.py`` checks that the two agree.
    """
    return valid_name(namespace) and valid_name(metric) and valid_dimensions(dimensions, limits)


def valid_name(name: str) -> bool:
    """A namespace or metric name ``check_point`` accepts: 1 to 255 bytes of ``[0-9A-Za-z._]``."""
    return 0 < len(name.encode()) <= MAX_NAME_BYTES and is_api_name(name)


def valid_dimensions(dimensions: Sequence[tuple[str, str]], limits: Limits) -> bool:
    """Dimensions ``check_point`` accepts (``valid_series``'s part for them)."""
    return (
        0 < len(dimensions) <= limits.max_dimensions
        and sum(len(k.encode()) + len(v.encode()) for k, v in dimensions)
        <= limits.max_dimension_bytes
        and all(is_api_name(k) and is_api_name(v) for k, v in dimensions)
    )


def _check_name(field: str, value: object, max_bytes: int, errors: list[str]) -> None:
    if not isinstance(value, str):
        errors.append(f"{field}: must be a string, got {_kind(value)}")
        return
    if not value:
        errors.append(f"{field}: must not be empty")
        return
    size = _utf8_len(value)
    if size > max_bytes:
        errors.append(f"{field}: must be at most {max_bytes} bytes, got {size}")
    if not is_api_name(value):
        errors.append(f"{field}: only [0-9A-Za-z._] allowed, got {_show(value)}")


def _check_dimensions(dims: object, limits: Limits, errors: list[str]) -> None:
    if not isinstance(dims, Mapping):
        errors.append(f"dimensions: must be a JSON object, got {_kind(dims)}")
        return
    count = len(dims)
    if count == 0:
        errors.append("dimensions: at least 1 dimension is required")
        return
    if count > limits.max_dimensions:
        errors.append(f"dimensions: at most {limits.max_dimensions} entries, got {count}")
    total = 0
    for key, value in dims.items():
        if not isinstance(key, str) or not key:
            errors.append(f"dimensions: key {_show(key)} must be a non-empty string")
        elif not is_api_name(key):
            errors.append(f"dimensions: key {_show(key)}: only [0-9A-Za-z._] allowed")
        if not isinstance(value, str) or not value:
            errors.append(f"dimensions.{_path(key)}: value must be a non-empty string")
        elif not is_api_name(value):
            errors.append(
                f"dimensions.{_path(key)}: only [0-9A-Za-z._] allowed, got {_show(value)}"
            )
        if isinstance(key, str):
            total += _utf8_len(key)
        if isinstance(value, str):
            total += _utf8_len(value)
    if total > limits.max_dimension_bytes:
        errors.append(
            f"dimensions: keys and values must total at most {limits.max_dimension_bytes} bytes,"
            f" got {total}"
        )


def check_timestamp(ts: object, *, now: float, limits: Limits = _DEFAULT_LIMITS) -> list[str]:
    """The timestamp rules of ``check_point`` alone."""
    errors: list[str] = []
    _check_timestamp(ts, now, limits, errors)
    return errors


def _check_timestamp(ts: object, now: float, limits: Limits, errors: list[str]) -> None:
    if type(ts) is not int:
        errors.append(f"timestamp: must be an integer of Unix seconds, got {_kind(ts)}")
        return
    if not _TS_MIN <= ts <= _TS_MAX:
        errors.append(f"timestamp: must be 10 digits of Unix seconds, got {_show(ts)}")
        return
    if ts < now - limits.max_age_seconds:
        errors.append(
            f"timestamp: {ts} is more than {limits.max_age_seconds} s older than now ({int(now)})"
        )
    elif ts > now + limits.max_future_seconds:
        errors.append(
            f"timestamp: {ts} is more than {limits.max_future_seconds} s ahead of now ({int(now)})"
        )


def _check_values(values: object, point_type: object, errors: list[str]) -> None:
    if not isinstance(values, Mapping):
        errors.append(f"values: must be a JSON object, got {_kind(values)}")
        return
    keys = values.keys()
    if point_type == TYPE_RAW:
        if keys != RAW_KEYS:
            errors.append(f'values: type 1 needs exactly the key "value", got {_keys(values)}')
    elif point_type == TYPE_AGGREGATED:
        if not values:
            errors.append("values: type 2 needs at least one of avg, sum, last, max, min, count")
        elif not keys <= AGG_KEYS:
            errors.append(
                "values: type 2 keys must be from avg, sum, last, max, min, count,"
                f" got {_keys(values)}"
            )
    for key, value in values.items():
        reason = _number_problem(value)
        if reason is not None:
            errors.append(f"values.{_path(key)}: {reason}")
        elif key == "count" and value < 0:
            errors.append(f"values.count: must be >= 0, got {value!r}")


def _number_problem(value: object) -> str | None:
    """Why ``value`` is not an acceptable JSON number, or None when it is."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a JSON number, got {_kind(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be finite, got {value!r}"
    # int/float comparison in Python is exact: 2.0**63 > VALUE_MAX is True.
    if not -VALUE_MAX <= value <= VALUE_MAX:
        return f"magnitude must be at most {VALUE_MAX}, got {value!r}"
    return None


def _utf8_len(text: str) -> int:
    if text.isascii():
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {_show(value)}"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def _keys(values: Mapping[object, object]) -> str:
    return "[" + ", ".join(_show(k) for k in values) + "]"


def _path(key: object) -> str:
    """A field name as it appears in a message: bare when it is a plain API name."""
    if isinstance(key, str) and len(key) <= _SHOWN_CHARS and is_api_name(key):
        return key
    return _show(key)


def _show(value: object) -> str:
    """A short printable form of an offending value (long values are cut)."""
    text = repr(value)
    if len(text) > _SHOWN_CHARS:
        return text[: _SHOWN_CHARS - 3] + "..."
    return text
