"""Point building: the fast path must say and write exactly what the seed's rules say.

The oracle is the plain form: a dict per point, ``rules.check_point``, ``json.dumps``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.points import BuildResult, PointBuilder
from gateway.protocol import Kind
from gateway.rules import Limits, check_point, valid_series
from gateway.window import StatColumns

NOW = 1_800_000_000.0
TS = int(NOW) // 60 * 60
LIMITS = Limits()
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True)

api = st.text(alphabet="abcXYZ019._", min_size=1, max_size=12)
name = st.one_of(
    api,
    st.text(alphabet="ab._", min_size=248, max_size=258),  # around 255 with and without .stat
    st.text(max_size=6),  # anything: empty, blanks, non-ASCII, quotes
)
dims = st.lists(st.tuples(name, name), max_size=7, unique_by=lambda kv: kv[0])
number = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64).map(float),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([9223372036854775807.0, 2.0**63, -(2.0**63), 0.5, -0.0]),
)


def oracle(builder: PointBuilder, rows, timestamp: int) -> tuple[list[bytes], int]:  # type: ignore[no-untyped-def]
    """What the points must be: every shape as a dict, checked, dumped."""
    out, invalid = [], 0
    for (metric, dimensions), _kind, stats in rows:
        shapes = list(builder._shapes(metric, stats, BuildResult()))
        for point_name, values in shapes:
            point = {
                "namespace": builder._namespace,
                "metric": point_name,
                "dimensions": dict(dimensions),
                "timestamp": timestamp,
                "type": builder._point_type,
                "values": values,
            }
            if check_point(point, now=NOW, limits=LIMITS):
                invalid += 1
            else:
                out.append(json.dumps(point, separators=(",", ":")).encode())
    return out, invalid


@SETTINGS
@given(
    rows=st.lists(
        st.tuples(
            st.tuples(name, dims.map(tuple)),
            st.sampled_from(list(Kind)),
            st.tuples(number, st.one_of(st.none(), number), number, number, number, number),
        ),
        max_size=8,
    ),
    point_type=st.sampled_from([1, 2]),
    timestamp=st.sampled_from([TS, TS - 40 * 86400, 12345, TS + 3600]),
)
def test_fast_build_writes_exactly_what_the_rules_allow(rows, point_type, timestamp) -> None:  # type: ignore[no-untyped-def]
    builder = PointBuilder(namespace="statsd", point_type=point_type, limits=LIMITS)
    built = builder.build(rows, timestamp, now=NOW)
    expected, invalid = oracle(builder, rows, timestamp)
    assert built.points == expected
    assert built.invalid == invalid
    for encoded in built.points:
        assert not check_point(json.loads(encoded), now=NOW, limits=LIMITS)


def columns_of(rows) -> StatColumns:  # type: ignore[no-untyped-def]
    """The rows as a snapshot hands them to ``build_columns``: a gauge's sum is None."""
    return StatColumns(
        keys=[key for key, _, _ in rows],
        kinds=np.array([list(Kind).index(kind) for _, kind, _ in rows], dtype=np.int8),
        gauge=np.array([stats[1] is None for _, _, stats in rows], dtype=bool),
        values=np.array(
            [[0.0 if v is None else v for v in stats] for _, _, stats in rows], dtype=float
        )
        .reshape(-1, 6)
        .T,
    )


@SETTINGS
@given(
    rows=st.lists(
        st.tuples(
            st.tuples(st.one_of(api, name), dims.map(tuple)),
            st.sampled_from(list(Kind)),
            st.tuples(number, st.one_of(st.none(), number), number, number, number, number),
        ),
        max_size=12,
    ),
    point_type=st.sampled_from([1, 2]),
    timestamp=st.sampled_from([TS, TS - 40 * 86400]),
)
def test_columns_build_the_same_points_as_rows(rows, point_type, timestamp) -> None:  # type: ignore[no-untyped-def]
    """``build_columns`` writes the plain rows itself and hands the others to ``build``,
    so only the order may differ: the rows it handed over come last."""
    by_rows = PointBuilder(namespace="statsd", point_type=point_type).build(
        rows, timestamp, now=NOW
    )
    by_columns = PointBuilder(namespace="statsd", point_type=point_type).build_columns(
        columns_of(rows), timestamp, now=NOW
    )
    assert sorted(by_columns.points) == sorted(by_rows.points)
    assert (by_columns.invalid, by_columns.clamped) == (by_rows.invalid, by_rows.clamped)


def test_columns_write_integers_floats_and_gauges_as_json_numbers() -> None:
    rows = [
        (("c", (("h", "n"),)), Kind.COUNTER, (2.5, 5.0, 3.0, 3.0, 2.0, 2.0)),
        (("g", (("h", "n"),)), Kind.GAUGE, (-0.0, None, 1e16, 0.1, -7.0, 0.0)),
        (("s", (("h", "n"),)), Kind.SET, (4.0, 4.0, 4.0, 4.0, 4.0, 4.0)),
    ]
    built = PointBuilder(namespace="statsd").build_columns(columns_of(rows), TS, now=NOW)
    assert [json.loads(p)["values"] for p in built.points] == [
        {"avg": 2.5, "sum": 5, "last": 3, "max": 3, "min": 2, "count": 2},
        {"avg": 0, "last": 1e16, "max": 0.1, "min": -7, "count": 0},
        {"avg": 4, "sum": 4, "last": 4, "max": 4, "min": 4, "count": 4},
    ]
    assert b'"last":1e+16,' in built.points[1]  # past 2**53 a float keeps its float form


@SETTINGS
@given(namespace=name, metric=name, dimensions=dims)
def test_valid_series_agrees_with_check_point(namespace: str, metric: str, dimensions) -> None:  # type: ignore[no-untyped-def]
    point = {
        "namespace": namespace,
        "metric": metric,
        "dimensions": dict(dimensions),
        "timestamp": TS,
        "type": 2,
        "values": {"sum": 1},
    }
    assert valid_series(namespace, metric, dimensions, LIMITS) == (
        check_point(point, now=NOW, limits=LIMITS) == []
    )


def test_a_typical_point_is_encoded_as_compact_json() -> None:
    builder = PointBuilder(namespace="statsd")
    rows = [
        (
            ("api.hits", (("host", "n1"), ("route", "_x"))),
            Kind.COUNTER,
            (2.5, 5.0, 3.0, 3.0, 2.0, 2.0),
        )
    ]
    (encoded,) = builder.build(rows, TS, now=NOW).points
    assert encoded == (
        b'{"namespace":"statsd","metric":"api.hits","dimensions":{"host":"n1","route":"_x"},'
        b'"timestamp":' + str(TS).encode() + b',"type":2,"values":{"avg":2.5,"sum":5,"last":3,'
        b'"max":3,"min":2,"count":2}}'
    )
    assert not math.isnan(json.loads(encoded)["values"]["avg"])


@pytest.mark.parametrize(
    ("stats", "kept"),
    [
        pytest.param((7.0, None, 7.0, 7.0, 7.0, 0.0), True, id="held-gauge-count-0"),
        pytest.param((1.0, 1.0, 1.0, 1.0, 1.0, -1.0), False, id="negative-count"),
        pytest.param((1.0, 1.0, 1.0, 1.0, 1.0, -0.5), False, id="negative-fractional-count"),
        pytest.param((math.nan, 1.0, 1.0, 1.0, 1.0, 1.0), False, id="nan-avg"),
        pytest.param((math.inf, 1.0, 1.0, 1.0, 1.0, 1.0), True, id="inf-avg-clamped"),
        pytest.param((2.0**63, -(2.0**63), 1.0, 1.0, 1.0, 1.0), True, id="2**63-clamped"),
        pytest.param((2.0**53, 2.0**53 - 1, -(2.0**53), 1.0, 1.0, 1.0), True, id="2**53"),
    ],
)
@pytest.mark.parametrize("point_type", [1, 2])
@pytest.mark.parametrize("columns", [False, True], ids=["rows", "columns"])
def test_values_are_kept_exactly_when_the_rules_allow(
    stats: tuple[float, float | None, float, float, float, float],
    kept: bool,
    point_type: int,
    columns: bool,
) -> None:
    builder = PointBuilder(namespace="statsd", point_type=point_type)
    rows = [(("g", (("host", "n1"),)), Kind.GAUGE, stats)]
    if columns:
        built = builder.build_columns(columns_of(rows), TS, now=NOW)
    else:
        built = builder.build(rows, TS, now=NOW)
    expected, invalid = oracle(builder, rows, TS)
    assert (built.points, built.invalid) == (expected, invalid)
    if point_type == 2:
        assert bool(built.points) == kept


_B = "b" * 120


@pytest.mark.parametrize(
    ("namespace", "metric", "dimensions"),
    [
        pytest.param("s", "m" * 255, (("h", "n"),), id="metric-255"),
        pytest.param("s", "m" * 256, (("h", "n"),), id="metric-256"),
        pytest.param("n" * 255, "m", (("h", "n"),), id="namespace-255"),
        pytest.param("n" * 256, "m", (("h", "n"),), id="namespace-256"),
        pytest.param("s", "m", (("k", _B), ("j", _B), ("i", "x" * 12)), id="dims-255-bytes"),
        pytest.param("s", "m", (("k", _B), ("j", _B), ("i", "x" * 13)), id="dims-256-bytes"),
        pytest.param("s", "m", tuple((f"k{i}", "v") for i in range(5)), id="five-dims"),
        pytest.param("s", "m", tuple((f"k{i}", "v") for i in range(6)), id="six-dims"),
        pytest.param("s", "m", (), id="no-dims"),
        pytest.param("s", "", (("h", "n"),), id="empty-metric"),
        pytest.param("s", "m", (("h", ""),), id="empty-value"),
        pytest.param("s", "café", (("h", "n"),), id="non-ascii-metric"),
        pytest.param("s", "m", (("h", "n-1"),), id="dash-in-value"),
    ],
)
def test_valid_series_agrees_with_check_point_at_the_limits(
    namespace: str, metric: str, dimensions: tuple[tuple[str, str], ...]
) -> None:
    point = {"namespace": namespace, "metric": metric, "dimensions": dict(dimensions),
             "timestamp": TS, "type": 2, "values": {"sum": 1}}  # fmt: skip
    assert valid_series(namespace, metric, dimensions, LIMITS) == (
        check_point(point, now=NOW, limits=LIMITS) == []
    )
