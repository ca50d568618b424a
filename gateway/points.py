"""Closed windows become API points: values clamped, every point checked, encoded once.

A type-2 point (the seed's aggregated form) carries avg, sum, last, max, min and count
(gauges leave out sum).  With ``point_type=1`` each statistic becomes its own raw point
``<metric>.<stat>`` with ``{"value": x}``, for accounts whose API accepts only raw points.

Values are JSON numbers clamped to +-9223372036854775807, written as that exact integer:
the float nearest to it is 2**63, which the API refuses.  Every point is checked against
the seed's rules (``gateway.rules``) before it leaves; a point that fails is dropped and
counted, never sent to be refused.

Pure: no I/O, no logging, no numpy (snapshots hand over plain floats).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from gateway.protocol import Kind, SeriesKey, Tags
from gateway.rules import (
    VALUE_MAX,
    Limits,
    check_point,
    check_timestamp,
    valid_dimensions,
    valid_name,
)
from gateway.window import Stats

STAT_NAMES = ("avg", "sum", "last", "max", "min", "count")
_INTEGRAL_EXACT = 2.0**53
_MEMO_MAX = 65_536
"""Metric names and dimension sets remembered as checked; past it the memo starts afresh."""


class PointDrop(enum.StrEnum):
    INVALID = "invalid"


@dataclass(slots=True)
class BuildResult:
    """Encoded points (one JSON object each), and what had to be changed or dropped."""

    points: list[bytes] = field(default_factory=list)
    clamped: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)
    """The rule violations of the first few invalid points, for a log line."""


def json_number(value: float) -> tuple[int | float, bool]:
    """The JSON value for ``value`` and whether it was clamped into the API's range."""
    if value >= VALUE_MAX:
        return VALUE_MAX, True
    if value <= -VALUE_MAX:
        return -VALUE_MAX, True
    if value.is_integer() and abs(value) < _INTEGRAL_EXACT:
        return int(value), False
    return value, False


class PointBuilder:
    def __init__(
        self, *, namespace: str, point_type: int = 2, limits: Limits | None = None
    ) -> None:
        if point_type not in (1, 2):
            raise ValueError("point_type must be 1 or 2")
        self._namespace = namespace
        self._point_type = point_type
        self._limits = limits or Limits()
        self._namespace_ok = valid_name(namespace)
        # Most series share their metric name or their dimensions with many others: each
        # is checked (and the dimensions written as JSON) once, not once per point.
        self._names: dict[str, bool] = {}
        self._dimensions: dict[Tags, str | None] = {}

    def build(
        self,
        rows: Iterable[tuple[SeriesKey, Kind, Stats]],
        timestamp: int,
        *,
        now: float,
        into: BuildResult | None = None,
    ) -> BuildResult:
        """Encode every row; a point that breaks a rule is dropped with its reasons.

        The namespace and timestamp are checked once; names and dimensions as
        ``rules.valid_series`` does, once per distinct name and dimension set; values per
        point.  Only a point failing one of these goes through ``check_point`` for its
        reasons.  Names and dimension values are ``[0-9A-Za-z._]`` by then, so they go into
        the JSON text without escaping.
        """
        result = BuildResult() if into is None else into
        namespace, point_type, limits = self._namespace, self._point_type, self._limits
        batch_ok = self._namespace_ok and not check_timestamp(timestamp, now=now, limits=limits)
        head = f'{{"namespace":"{namespace}","metric":"'
        middle = f'"timestamp":{timestamp},"type":{point_type},"values":{{'
        points = result.points
        for key, _kind, stats in rows:
            metric, dimensions = key
            dims = self._dimensions_json(dimensions) if batch_ok else None
            if point_type == 2 and dims is not None and self._name_ok(metric):
                numbers = _aggregated_text(stats)
                if numbers is not None:
                    points.append(
                        f'{head}{metric}","dimensions":{{{dims}}},{middle}{numbers}}}}}'.encode()
                    )
                    continue
            for name, values in self._shapes(metric, stats, result):
                if dims is None or not self._name_ok(name) or not _values_ok(values, point_type):
                    point = {
                        "namespace": namespace,
                        "metric": name,
                        "dimensions": dict(dimensions),
                        "timestamp": timestamp,
                        "type": point_type,
                        "values": values,
                    }
                    result.invalid += 1
                    if len(result.problems) < 5:
                        problems = check_point(point, now=now, limits=limits)
                        result.problems.append(f"{name}: {'; '.join(problems)}")
                    continue
                numbers = ",".join(f'"{k}":{v!r}' for k, v in values.items())
                points.append(
                    f'{head}{name}","dimensions":{{{dims}}},{middle}{numbers}}}}}'.encode()
                )
        return result

    def _name_ok(self, name: str) -> bool:
        ok = self._names.get(name)
        if ok is None:
            if len(self._names) >= _MEMO_MAX:
                self._names.clear()
            ok = self._names[name] = valid_name(name)
        return ok

    def _dimensions_json(self, dimensions: Tags) -> str | None:
        """The dimensions as JSON object members, or None when ``check_point`` refuses them."""
        try:
            return self._dimensions[dimensions]
        except KeyError:
            pass
        if len(self._dimensions) >= _MEMO_MAX:
            self._dimensions.clear()
        text = None
        if valid_dimensions(dimensions, self._limits):
            text = ",".join(f'"{k}":"{v}"' for k, v in dimensions)
        self._dimensions[dimensions] = text
        return text

    def _shapes(
        self, metric: str, stats: Stats, result: BuildResult
    ) -> Iterator[tuple[str, dict[str, int | float]]]:
        values: dict[str, int | float] = {}
        for stat, raw in zip(STAT_NAMES, stats, strict=True):
            if raw is None:
                continue
            number, clamped = json_number(raw)
            result.clamped += clamped
            values[stat] = number
        if self._point_type == 2:
            yield metric, values
        else:
            for stat, number in values.items():
                yield f"{metric}.{stat}", {"value": number}


def _values_ok(values: dict[str, int | float], point_type: int) -> bool:
    """What ``check_point`` says of the values of a point made by ``_shapes``: their keys are
    right for the type and their magnitudes clamped, so only NaN and, in a type-2 point, a
    negative count are left to refuse (``tests/test_points.py`` checks the two agree)."""
    for number in values.values():
        if number != number:
            return False
    return point_type != 2 or values.get("count", 0) >= 0


_WITH_SUM = '"avg":%s,"sum":%s,"last":%s,"max":%s,"min":%s,"count":%s'
_WITHOUT_SUM = '"avg":%s,"last":%s,"max":%s,"min":%s,"count":%s'


def _aggregated_text(stats: Stats) -> str | None:
    """A type-2 point's values as JSON members, when no value needs clamping or refusing.

    The common case, written without building a dict: what ``_shapes`` and ``_values_ok``
    would make of the same stats.  None (NaN, a value to clamp, a negative count) sends
    the row through the general path, which counts and explains.
    """
    total, count = stats[1], stats[5]
    if not count >= 0:
        return None
    texts = []
    for value in stats:
        if value is None:
            continue
        if not -VALUE_MAX < value < VALUE_MAX:  # also NaN
            return None
        if value.is_integer() and -_INTEGRAL_EXACT < value < _INTEGRAL_EXACT:
            texts.append(repr(int(value)))
        else:
            texts.append(repr(value))
    return (_WITHOUT_SUM if total is None else _WITH_SUM) % tuple(texts)
