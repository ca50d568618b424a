"""Closed windows become API points: values clamped, every point checked, encoded once.

A type-2 point (the seed's aggregated form) carries avg, sum, last, max, min and count
(gauges leave out sum).  With ``point_type=1`` each statistic becomes its own raw point
``<metric>.<stat>`` with ``{"value": x}``, for accounts whose API accepts only raw points.

Values are JSON numbers clamped to +-9223372036854775807, written as that exact integer:
the float nearest to it is 2**63, which the API refuses.  Every point is checked against
the seed's rules (``gateway.rules``) before it leaves; a point that fails is dropped and
counted, never sent to be refused.

``build`` takes rows of plain floats, one at a time; ``build_columns`` takes a
snapshot's stat columns and writes the common rows with numpy and C-level maps, which is
how windows are encoded.  Both give the same points.

Pure: no I/O, no logging.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from gateway.names import MAX_NAME_BYTES, is_api_name
from gateway.protocol import Kind, SeriesKey, Tags
from gateway.rules import (
    VALUE_MAX,
    Limits,
    check_point,
    check_timestamp,
    valid_dimensions,
    valid_name,
)
from gateway.window import STATS, StatColumns, Stats

_INTEGRAL_EXACT = 2.0**53
_BITS = np.arange(len(STATS))[:, None]
_UNSEEN = object()
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
        self._formats_at: tuple[int, npt.NDArray[np.object_]] | None = None

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

    def build_columns(
        self,
        part: StatColumns,
        timestamp: int,
        *,
        now: float,
        into: BuildResult | None = None,
    ) -> BuildResult:
        """``build`` for rows handed over as columns, with the same points as a result.

        Type-2 rows whose names, dimensions and values need no change or refusal (nearly
        all) are written by C-level maps: numpy picks each row's format (which values are
        integers, whether it has a sum), and one ``%`` per row fills it in.  Any other row
        goes through ``build``, which clamps, drops and explains.
        """
        result = BuildResult() if into is None else into
        if not part.keys:
            return result
        if self._point_type != 2 or not self._namespace_ok:
            return self.build(part.rows(), timestamp, now=now, into=result)
        if check_timestamp(timestamp, now=now, limits=self._limits):
            return self.build(part.rows(), timestamp, now=now, into=result)
        metrics, tags = zip(*part.keys, strict=True)
        dims = self._dimensions_all(tags)
        values = part.values
        plain = (np.abs(values) < VALUE_MAX).all(axis=0) & (values[5] >= 0)  # NaN fails
        if None in dims or not _names_ok(metrics):
            plain &= [
                d is not None and self._name_ok(m) for m, d in zip(metrics, dims, strict=True)
            ]
        integral = (values == np.trunc(values)) & (np.abs(values) < _INTEGRAL_EXACT)
        shape = (integral << _BITS).sum(axis=0) | part.gauge << len(STATS)
        fields: Iterable[tuple[object, ...]] = zip(metrics, dims, *values.tolist(), strict=True)
        everything = bool(plain.all())
        if not everything:
            shape = shape[plain]
            fields = itertools.compress(fields, plain.tolist())
        formats = self._formats(timestamp)[shape].tolist()
        result.points.extend(map(str.encode, map(str.__mod__, formats, fields)))
        if not everything:
            rest = np.flatnonzero(~plain).tolist()
            self.build(part.rows(rest), timestamp, now=now, into=result)
        return result

    def _dimensions_all(self, tags: tuple[Tags, ...]) -> list[str | None]:
        """``_dimensions_json`` of each of ``tags``, from the memo in one C-level pass."""
        texts = list(map(self._dimensions.get, tags, itertools.repeat(_UNSEEN)))
        if _UNSEEN in texts:
            for i, text in enumerate(texts):
                if text is _UNSEEN:
                    texts[i] = self._dimensions_json(tags[i])
        return texts  # type: ignore[return-value]

    def _formats(self, timestamp: int) -> npt.NDArray[np.object_]:
        """The ``%`` formats of a type-2 point at ``timestamp``, by row shape.

        A shape's low six bits say which of the statistics are integers (written with
        ``%d``; the others with ``%r``, which is ``repr``), and bit 6 that it is a gauge,
        whose sum is consumed without being written (``%.0s``).
        """
        if self._formats_at is not None and self._formats_at[0] == timestamp:
            return self._formats_at[1]
        head = (
            f'{{"namespace":"{self._namespace}","metric":"%s","dimensions":{{%s}},'
            f'"timestamp":{timestamp},"type":2,"values":{{'
        )
        table = []
        for gauge in (False, True):
            for shape in range(1 << len(STATS)):
                members: list[str] = []
                for bit, stat in enumerate(STATS):
                    spec = "%d" if shape >> bit & 1 else "%r"
                    if stat == "sum" and gauge:
                        members[-1] += "%.0s"
                    else:
                        members.append(f'"{stat}":{spec}')
                table.append(head + ",".join(members) + "}}")
        formats = np.array(table, dtype=object)
        self._formats_at = (timestamp, formats)
        return formats

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
        for stat, raw in zip(STATS, stats, strict=True):
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


def _names_ok(names: tuple[str, ...]) -> bool:
    """True when every name is one ``valid_name`` accepts, checked in C-level passes: names
    of the API's ASCII charset have as many bytes as characters."""
    return (
        is_api_name("".join(names))
        and min(map(len, names)) > 0
        and max(map(len, names)) <= MAX_NAME_BYTES
    )
